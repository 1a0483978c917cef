/* gru_eprop plugin: forward against a double-precision GRU written here from
 * the PyTorch equations; e-prop gradients against reverse mode through the
 * block_grad network over the whole sequence; mode=bptt against central
 * finite differences; the block (GEMM) and plain per-step trace forms against
 * each other; trace memory independent of the block length; seeded init.
 *
 * The plugin is loaded with dlopen and driven through its descriptor, as a
 * host would. Lane streams are continuous runs of random data; a schedule says
 * how each block cuts them (len, SEQ_START, reset() calls between blocks). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

enum { SD = 5, SH = 4, SG = 3 * SH, MAXB = 2, MAXBLK = 8, MAXS = 40 };
static const int64_t PN[4] = {SG * SD, SG * SH, SG, SG}; /* weight_ih, weight_hh, bias_ih, bias_hh */
static const char *const PNAME[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};

typedef struct fixture {
    void                    *so;
    const clapp_plugin_desc *desc;
    clapp_host               host;
    tu_log                   log;
} fixture;

/* One instance plus host-owned blocks and gradient tensors. */
typedef struct inst {
    const clapp_plugin_desc *d;
    void                    *self;
    int64_t                  B, D, H, T;
    clapp_block              in, out;
    clapp_tensor             gout, gin;
    clapp_tensor            *w[4], *gw[4];
} inst;

/* How blocks cut the lane streams. */
typedef struct sched {
    int64_t  B, T;
    int      nblk;
    int32_t  len[MAXBLK][MAXB];
    uint32_t flags[MAXBLK][MAXB];
    int      reset_call[MAXBLK][MAXB]; /* host calls reset(lane) before this block */
} sched;

/* Random lane streams: inputs x and learning signals c (dLoss/dh_t). */
typedef struct streams {
    float x[MAXB][MAXS][SD];
    float c[MAXB][MAXS][SH];
} streams;

/* What a plugin run produced, indexed by lane and stream step. */
typedef struct run_out {
    float w[4][SG * SD];      /* weights used (for the reference) */
    float gw[4][SG * SD];     /* accumulated gradients */
    float h[MAXB][MAXS][SH];  /* outputs */
    float gin[MAXB][MAXS][SD];
    int   S[MAXB];            /* steps per lane */
} run_out;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_unif(uint64_t *st) /* U(-1, 1) */
{
    return (float)((double)(rng_next(st) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void make_streams(streams *s, uint64_t seed)
{
    uint64_t st = seed;
    for (int b = 0; b < MAXB; b++)
        for (int t = 0; t < MAXS; t++) {
            for (int d = 0; d < SD; d++)
                s->x[b][t][d] = rng_unif(&st);
            for (int i = 0; i < SH; i++)
                s->c[b][t][i] = rng_unif(&st);
        }
}

/* max |a - b| / max |b| */
static double rel_err_fd(const float *a, const double *b, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 0.0 ? den : 1e-300);
}

static double rel_err_ff(const float *a, const float *b, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - (double)b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0.0 ? den : 1e-300);
}

static double rel_err_dd(const double *a, const double *b, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 0.0 ? den : 1e-300);
}

static void fill_values(const clapp_plugin_desc *d, int64_t H, const char *rule, const char *traces,
                        clapp_param_value *v)
{
    for (int32_t i = 0; i < d->n_params; i++) {
        const clapp_param_desc *p = &d->params[i];
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = p->name;
        v[i].s = p->def;
        if (p->type == CLAPP_PARAM_INT)
            v[i].i = strtoll(p->def, NULL, 10);
        if (strcmp(p->name, "hidden") == 0)
            v[i].i = H;
        else if (strcmp(p->name, "mode") == 0) {
            v[i].s = rule;
            v[i].i = strcmp(rule, "bptt") == 0;
        } else if (strcmp(p->name, "traces") == 0) {
            v[i].s = traces;
            v[i].i = strcmp(traces, "step") == 0;
        }
        v[i].f = (double)v[i].i;
    }
}

static void inst_close(inst *I)
{
    if (I->d)
        I->d->destroy(I->self);
    clapp_tensor_free(&I->in.x);
    clapp_tensor_free(&I->out.x);
    clapp_tensor_free(&I->gout);
    clapp_tensor_free(&I->gin);
    free(I->in.lane);
    free(I->out.lane);
    memset(I, 0, sizeof *I);
}

static void inst_open(inst *I, fixture *f, int64_t H, const char *rule, const char *traces, uint64_t seed,
                      int64_t B, int64_t D, int64_t T)
{
    clapp_param_value v[8];
    clapp_create_info ci;
    clapp_stream_info si, so;
    const clapp_named_tensor *list = NULL;
    int32_t n = 0;
    memset(I, 0, sizeof *I);
    assert_true(f->desc->n_params <= 8);
    fill_values(f->desc, H, rule, traces, v);
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &f->host;
    ci.instance_name = "gru";
    ci.values = v;
    ci.n_values = f->desc->n_params;
    ci.seed = seed;
    I->d = f->desc;
    I->B = B, I->D = D, I->H = H, I->T = T;
    assert_int_equal(I->d->create(&ci, &I->self), CLAPP_OK);
    memset(&si, 0, sizeof si);
    si.ndim = 3;
    si.shape[0] = B;
    si.shape[1] = D;
    si.shape[2] = T;
    si.rate = 100.0;
    assert_int_equal(I->d->configure(I->self, &si, &so), CLAPP_OK);
    assert_int_equal(so.ndim, 3);
    assert_int_equal(so.shape[0], B);
    assert_int_equal(so.shape[1], H);
    assert_int_equal(so.shape[2], T);
    assert_true(so.rate == 100.0);
    assert_int_equal(clapp_tensor_alloc_shape(&I->in.x, 3, si.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&I->out.x, 3, so.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&I->gout, 3, so.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&I->gin, 3, si.shape), 0);
    I->in.lanes = I->out.lanes = (int32_t)B;
    I->in.lane = calloc((size_t)B, sizeof(clapp_lane));
    I->out.lane = calloc((size_t)B, sizeof(clapp_lane));
    assert_non_null(I->in.lane);
    assert_non_null(I->out.lane);
    I->in.rate = I->out.rate = 100.0;
    assert_int_equal(I->d->tensors(I->self, &list, &n), CLAPP_OK);
    assert_int_equal(n, 4);
    for (int k = 0; k < 4; k++) {
        const int64_t rows = 3 * H, cols = k == 0 ? D : H;
        assert_string_equal(list[k].name, PNAME[k]);
        assert_non_null(list[k].grad);
        I->w[k] = list[k].value;
        I->gw[k] = list[k].grad;
        assert_int_equal(I->w[k]->ndim, k < 2 ? 2 : 1);
        assert_int_equal(I->w[k]->shape[0], rows);
        if (k < 2)
            assert_int_equal(I->w[k]->shape[1], cols);
    }
}

static void inst_zero_grads(inst *I)
{
    for (int k = 0; k < 4; k++)
        clapp_tensor_zero(I->gw[k]);
}

/* ------------------------------------------------------------------------ */
/* Double-precision reference (PyTorch GRU equations)                       */

typedef struct refw {
    double p[4][SG * SD]; /* weight_ih [3H, D], weight_hh [3H, H], bias_ih, bias_hh */
} refw;

/* One lane's steps, gathered from a schedule. */
typedef struct lane_data {
    int           S;
    double        x[MAXS][SD];
    double        c[MAXS][SH];
    unsigned char reset[MAXS];  /* h_{s-1} := 0 (SEQ_START or reset()) */
    unsigned char bstart[MAXS]; /* first step of a block */
} lane_data;

/* Forward record. */
typedef struct rec {
    double hp[MAXS][SH], r[MAXS][SH], z[MAXS][SH], n[MAXS][SH], g[MAXS][SH], h[MAXS][SH];
} rec;

static double sigm(double a)
{
    return 1.0 / (1.0 + exp(-a));
}

/* w: run_out.w, [4][SG * SD] flattened */
static void refw_from(refw *R, const float *w)
{
    for (int k = 0; k < 4; k++)
        for (int64_t j = 0; j < PN[k]; j++)
            R->p[k][j] = (double)w[k * SG * SD + j];
}

/* h_{s-1} is 0 at a reset, else hfix[s] at a block start when hfix is given
 * (the truncated-BPTT view: the previous block's state is a constant), else
 * the running state. */
static void ref_forward(const refw *R, const lane_data *L, const double (*hfix)[SH], rec *o)
{
    const double *wih = R->p[0], *whh = R->p[1], *bih = R->p[2], *bhh = R->p[3];
    for (int s = 0; s < L->S; s++) {
        for (int i = 0; i < SH; i++)
            o->hp[s][i] = L->reset[s] ? 0.0 : (hfix && L->bstart[s]) ? hfix[s][i] : s ? o->h[s - 1][i] : 0.0;
        for (int i = 0; i < SH; i++) {
            double a[3], hh[3];
            for (int q = 0; q < 3; q++) {
                const int k = q * SH + i;
                a[q] = bih[k];
                hh[q] = bhh[k];
                for (int j = 0; j < SD; j++)
                    a[q] += wih[k * SD + j] * L->x[s][j];
                for (int j = 0; j < SH; j++)
                    hh[q] += whh[k * SH + j] * o->hp[s][j];
            }
            o->r[s][i] = sigm(a[0] + hh[0]);
            o->z[s][i] = sigm(a[1] + hh[1]);
            o->g[s][i] = hh[2];
            o->n[s][i] = tanh(a[2] + o->r[s][i] * hh[2]);
            o->h[s][i] = (1.0 - o->z[s][i]) * o->n[s][i] + o->z[s][i] * o->hp[s][i];
        }
    }
}

/* Reverse mode of L = Σ_s c_s·h_s. full = 0: the block_grad network (the
 * gates see a constant copy of h_{s-1}; only h_s = (1-z) n + z h_{s-1} keeps
 * the path). full = 1: the standard GRU. No gradient flows from step s into
 * s-1 where stop[s]. Adds parameter gradients into gp; writes dL/dx_s to dx. */
static void ref_backward(const refw *R, const lane_data *L, const rec *o, const unsigned char *stop, int full,
                         double gp[4][SG * SD], double (*dx)[SD])
{
    const double *wih = R->p[0], *whh = R->p[1];
    double dh_next[SH] = {0}, dhh_next[SG] = {0};
    for (int s = L->S - 1; s >= 0; s--) {
        double dih[SG], dhh[SG], dh[SH];
        const int carry = s + 1 < L->S && !stop[s + 1];
        for (int i = 0; i < SH; i++) {
            dh[i] = L->c[s][i];
            if (carry) {
                dh[i] += o->z[s + 1][i] * dh_next[i];
                if (full)
                    for (int k = 0; k < SG; k++)
                        dh[i] += whh[k * SH + i] * dhh_next[k];
            }
        }
        for (int i = 0; i < SH; i++) {
            const double r = o->r[s][i], z = o->z[s][i], n = o->n[s][i];
            const double dn = dh[i] * (1.0 - z) * (1.0 - n * n);
            const double dz = dh[i] * (o->hp[s][i] - n) * z * (1.0 - z);
            const double dr = dn * o->g[s][i] * r * (1.0 - r);
            dih[i] = dhh[i] = dr;
            dih[SH + i] = dhh[SH + i] = dz;
            dih[2 * SH + i] = dn;
            dhh[2 * SH + i] = dn * r;
        }
        for (int k = 0; k < SG; k++) {
            for (int j = 0; j < SD; j++)
                gp[0][k * SD + j] += dih[k] * L->x[s][j];
            for (int j = 0; j < SH; j++)
                gp[1][k * SH + j] += dhh[k] * o->hp[s][j];
            gp[2][k] += dih[k];
            gp[3][k] += dhh[k];
        }
        if (dx)
            for (int j = 0; j < SD; j++) {
                dx[s][j] = 0.0;
                for (int k = 0; k < SG; k++)
                    dx[s][j] += wih[k * SD + j] * dih[k];
            }
        memcpy(dh_next, dh, sizeof dh);
        memcpy(dhh_next, dhh, sizeof dhh);
    }
}

static double ref_loss(const refw *R, const lane_data *L, const double (*hfix)[SH])
{
    static rec o; /* large; tests run one at a time */
    double sum = 0.0;
    ref_forward(R, L, hfix, &o);
    for (int s = 0; s < L->S; s++)
        for (int i = 0; i < SH; i++)
            sum += L->c[s][i] * o.h[s][i];
    return sum;
}

/* Gather lane b's steps in stream order. */
static void lane_gather(const sched *sc, const streams *st, int b, lane_data *L)
{
    int s = 0;
    memset(L, 0, sizeof *L);
    for (int k = 0; k < sc->nblk; k++)
        for (int t = 0; t < sc->len[k][b]; t++, s++) {
            assert_true(s < MAXS);
            for (int d = 0; d < SD; d++)
                L->x[s][d] = (double)st->x[b][s][d];
            for (int i = 0; i < SH; i++)
                L->c[s][i] = (double)st->c[b][s][i];
            L->bstart[s] = t == 0;
            L->reset[s] = t == 0 && ((sc->flags[k][b] & CLAPP_LANE_SEQ_START) || sc->reset_call[k][b]);
        }
    L->S = s;
}

/* ------------------------------------------------------------------------ */
/* Plugin driver                                                             */

/* Run the schedule through a fresh instance. z_shift is added to the z-gate
 * part of bias_ih after init (z near 1 makes the carried traces matter more).
 * With learn, every block gets backward(c) in `calls` equal parts. */
static void run_sched(fixture *f, const sched *sc, const streams *st, const char *rule, const char *traces,
                      int learn, int calls, float z_shift, run_out *o)
{
    inst I;
    int pos[MAXB] = {0}, seqpos[MAXB] = {0};
    memset(o, 0, sizeof *o);
    inst_open(&I, f, SH, rule, traces, 77, sc->B, SD, sc->T);
    for (int i = 0; i < SH; i++)
        I.w[2]->data[SH + i] += z_shift;
    for (int k = 0; k < 4; k++)
        memcpy(o->w[k], I.w[k]->data, (size_t)PN[k] * sizeof(float));
    inst_zero_grads(&I);
    if (!learn)
        assert_int_equal(I.d->set_mode(I.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    for (int k = 0; k < sc->nblk; k++) {
        const int64_t T = sc->T;
        clapp_tensor_zero(&I.in.x);
        for (int b = 0; b < sc->B; b++) {
            const int32_t len = sc->len[k][b];
            clapp_lane *ln = &I.in.lane[b];
            if (sc->reset_call[k][b])
                assert_int_equal(I.d->reset(I.self, b), CLAPP_OK);
            if (sc->flags[k][b] & CLAPP_LANE_SEQ_START)
                seqpos[b] = 0;
            for (int d = 0; d < SD; d++)
                for (int t = 0; t < len; t++)
                    I.in.x.data[(b * SD + d) * T + t] = st->x[b][pos[b] + t][d];
            memset(ln, 0, sizeof *ln);
            ln->seq_id = len > 0 ? b : -1;
            ln->flags = sc->flags[k][b];
            ln->len = len;
            ln->pts = seqpos[b];
            ln->class_label = -1;
        }
        memcpy(I.out.lane, I.in.lane, (size_t)sc->B * sizeof(clapp_lane));
        for (int b = 0; b < sc->B; b++) /* the plugin must set these itself */
            I.out.lane[b].len = -1, I.out.lane[b].pts = -1;
        assert_int_equal(I.d->forward(I.self, &I.in, &I.out), CLAPP_OK);
        for (int b = 0; b < sc->B; b++) {
            const int32_t len = sc->len[k][b];
            assert_int_equal(I.out.lane[b].len, len);
            assert_int_equal(I.out.lane[b].pts, seqpos[b]);
            for (int i = 0; i < SH; i++)
                for (int t = 0; t < T; t++) {
                    const float y = I.out.x.data[(b * SH + i) * T + t];
                    if (t < len)
                        o->h[b][pos[b] + t][i] = y;
                    else
                        assert_true(y == 0.0f);
                }
        }
        if (learn) {
            clapp_tensor_zero(&I.gout);
            clapp_tensor_zero(&I.gin);
            for (int b = 0; b < sc->B; b++)
                for (int i = 0; i < SH; i++)
                    for (int t = 0; t < sc->len[k][b]; t++)
                        I.gout.data[(b * SH + i) * T + t] = st->c[b][pos[b] + t][i] / (float)calls;
            for (int c = 0; c < calls; c++)
                assert_int_equal(I.d->backward(I.self, &I.gout, &I.gin), CLAPP_OK);
            for (int b = 0; b < sc->B; b++)
                for (int d = 0; d < SD; d++)
                    for (int t = 0; t < T; t++) {
                        const float v = I.gin.data[(b * SD + d) * T + t];
                        if (t < sc->len[k][b])
                            o->gin[b][pos[b] + t][d] = v;
                        else
                            assert_true(v == 0.0f);
                    }
        }
        for (int b = 0; b < sc->B; b++) {
            pos[b] += sc->len[k][b];
            seqpos[b] += sc->len[k][b];
        }
    }
    for (int k = 0; k < 4; k++)
        memcpy(o->gw[k], I.gw[k]->data, (size_t)PN[k] * sizeof(float));
    for (int b = 0; b < sc->B; b++)
        o->S[b] = pos[b];
    inst_close(&I);
}

/* The main schedule: B = 2, T = 7, five blocks. Lane 0 runs one sequence but
 * the host calls reset(0) before block 3 (so traces are carried over two
 * boundaries, 0->1->2, then 3->4); lane 1 ends a sequence after 4 steps of
 * block 1, is idle (len 0) in block 2 and starts a new sequence (SEQ_START)
 * in block 3 that ends with a partial block. */
static void main_sched(sched *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->B = 2;
    sc->T = 7;
    sc->nblk = 5;
    for (int k = 0; k < 5; k++)
        sc->len[k][0] = sc->len[k][1] = 7;
    sc->len[1][1] = 4;
    sc->len[2][1] = 0;
    sc->len[4][1] = 6;
    sc->flags[0][0] = sc->flags[0][1] = CLAPP_LANE_SEQ_START;
    sc->flags[1][1] = CLAPP_LANE_SEQ_END;
    sc->flags[3][1] = CLAPP_LANE_SEQ_START;
    sc->reset_call[3][0] = 1;
}

/* Reference gradients of the whole run. stop_blocks = 0: gradient flows over
 * block boundaries (e-prop weights); 1: it stops there (grad_in, BPTT). */
static void ref_grads(const sched *sc, const streams *st, const run_out *o, int full, int stop_blocks,
                      double gp[4][SG * SD], double dx[MAXB][MAXS][SD], double h[MAXB][MAXS][SH])
{
    static refw R;
    static lane_data L;
    static rec r;
    memset(gp, 0, sizeof(double) * 4 * SG * SD);
    refw_from(&R, &o->w[0][0]);
    for (int b = 0; b < sc->B; b++) {
        unsigned char stop[MAXS];
        lane_gather(sc, st, b, &L);
        assert_int_equal(L.S, o->S[b]);
        for (int s = 0; s < L.S; s++)
            stop[s] = L.reset[s] || (stop_blocks && L.bstart[s]);
        ref_forward(&R, &L, NULL, &r);
        ref_backward(&R, &L, &r, stop, full, gp, dx ? dx[b] : NULL);
        if (h)
            memcpy(h[b], r.h, sizeof r.h);
    }
}

static double rel_err_grads(const run_out *o, double gp[4][SG * SD], int verbose, const char *what)
{
    double worst = 0.0;
    for (int k = 0; k < 4; k++) {
        double e = rel_err_fd(o->gw[k], gp[k], PN[k]);
        if (verbose)
            printf("  %-28s %-9s rel err %.2e\n", what, PNAME[k], e);
        worst = fmax(worst, e);
    }
    return worst;
}

static double rel_err_gin(const sched *sc, const run_out *o, double dx[MAXB][MAXS][SD])
{
    double num = 0.0, den = 0.0;
    for (int b = 0; b < sc->B; b++)
        for (int s = 0; s < o->S[b]; s++)
            for (int d = 0; d < SD; d++) {
                num = fmax(num, fabs((double)o->gin[b][s][d] - dx[b][s][d]));
                den = fmax(den, fabs(dx[b][s][d]));
            }
    return num / den;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                     */

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const clapp_plugin_entry *entry;
    if (!f)
        return -1;
    tu_host_init(&f->host, &f->log);
    f->so = dlopen(CLAPP_TEST_PLUGIN_DIR "/gru_eprop.so", RTLD_NOW | RTLD_LOCAL);
    if (!f->so) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        free(f);
        return -1;
    }
    entry = dlsym(f->so, CLAPP_PLUGIN_ENTRY_SYMBOL);
    if (!entry || entry->abi_major != CLAPP_ABI_MAJOR || entry->n_plugins != 1) {
        dlclose(f->so);
        free(f);
        return -1;
    }
    f->desc = entry->plugins[0];
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    dlclose(f->so);
    tu_log_free(&f->log);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void test_gru_descriptor(void **state)
{
    fixture *f = *state;
    const clapp_plugin_desc *d = f->desc;
    assert_string_equal(d->id, "gru_eprop");
    assert_int_equal(d->kind, CLAPP_KIND_LAYER);
    assert_int_equal(d->n_params, 3);
    assert_string_equal(d->params[0].name, "hidden");
    assert_string_equal(d->params[0].def, "256");
    assert_true(d->params[0].min == 1.0 && d->params[0].max == 65536.0);
    assert_string_equal(d->params[1].name, "mode");
    assert_string_equal(d->params[1].choices, "eprop|bptt");
    assert_string_equal(d->params[1].def, "eprop");
    assert_non_null(d->backward);
    assert_non_null(d->report);
}

/* 1. Forward against the double GRU, several blocks, carried state, a
 *    SEQ_START and a reset() in the middle, a partial block. */
static void test_gru_forward_reference(void **state)
{
    fixture *f = *state;
    static streams st;
    static run_out o;
    static double gp[4][SG * SD], h[MAXB][MAXS][SH];
    sched sc;
    static refw R;
    static lane_data L;
    static rec r;
    double err = 0.0, unkept = 0.0;
    main_sched(&sc);
    make_streams(&st, 1);
    run_sched(f, &sc, &st, "eprop", "block", 0, 1, 0.0f, &o);
    ref_grads(&sc, &st, &o, 0, 0, gp, NULL, h);
    for (int b = 0; b < sc.B; b++)
        for (int s = 0; s < o.S[b]; s++)
            for (int i = 0; i < SH; i++)
                err = fmax(err, fabs((double)o.h[b][s][i] - h[b][s][i]));
    /* The test discriminates: restarting from 0 at every block start is far off. */
    refw_from(&R, &o.w[0][0]);
    for (int b = 0; b < sc.B; b++) {
        lane_gather(&sc, &st, b, &L);
        memcpy(L.reset, L.bstart, sizeof L.reset);
        ref_forward(&R, &L, NULL, &r);
        for (int s = 0; s < L.S; s++)
            for (int i = 0; i < SH; i++)
                unkept = fmax(unkept, fabs((double)o.h[b][s][i] - r.h[s][i]));
    }
    printf("  forward: max |h - h_ref| = %.2e over %d + %d steps (state not carried: %.2e)\n", err, o.S[0],
           o.S[1], unkept);
    assert_true(err < 2e-6);
    assert_true(unkept > 1e-2);
    assert_int_equal(o.S[0], 35);
    assert_int_equal(o.S[1], 24);
}

/* 2. e-prop weight gradients equal reverse mode through the block_grad network
 *    over the whole sequence; grad_in equals it with the gradient stopped at
 *    block starts. The same holds when backward is called twice per block. */
static void test_gru_eprop_vs_blockgrad_bptt(void **state)
{
    fixture *f = *state;
    static streams st;
    static run_out o, o2;
    static double gp[4][SG * SD], gp_trunc[4][SG * SD], gp_full[4][SG * SD];
    static double dx[MAXB][MAXS][SD], dx_unused[MAXB][MAXS][SD];
    sched sc;
    double e, e2, egin, dtrunc = 0.0, dfull = 0.0;
    main_sched(&sc);
    make_streams(&st, 2);
    run_sched(f, &sc, &st, "eprop", "block", 1, 1, 1.5f, &o);
    ref_grads(&sc, &st, &o, 0, 0, gp, dx_unused, NULL);
    ref_grads(&sc, &st, &o, 0, 1, gp_trunc, dx, NULL);
    ref_grads(&sc, &st, &o, 1, 0, gp_full, NULL, NULL);
    e = rel_err_grads(&o, gp, 1, "eprop(block) vs ref");
    egin = rel_err_gin(&sc, &o, dx);
    printf("  eprop(block) grad_in rel err %.2e\n", egin);
    assert_true(e < 1e-5);
    assert_true(egin < 1e-5);
    /* The test discriminates: dropping the carried traces, or using full BPTT, is far off. */
    for (int k = 0; k < 4; k++) {
        dtrunc = fmax(dtrunc, rel_err_dd(gp_trunc[k], gp[k], PN[k]));
        dfull = fmax(dfull, rel_err_dd(gp_full[k], gp[k], PN[k]));
    }
    printf("  without carried traces: %.2e off; full BPTT: %.2e off\n", dtrunc, dfull);
    assert_true(dtrunc > 1e-2);
    assert_true(dfull > 1e-2);

    /* Two backward calls per block, each with half the signal. */
    run_sched(f, &sc, &st, "eprop", "block", 1, 2, 1.5f, &o2);
    e2 = rel_err_grads(&o2, gp, 0, "");
    printf("  two backward calls per block: rel err %.2e, grad_in %.2e\n", e2, rel_err_gin(&sc, &o2, dx));
    assert_true(e2 < 1e-5);
    assert_true(rel_err_gin(&sc, &o2, dx) < 1e-5);
}

/* 2b. One long block gives the same e-prop gradient as the same sequences cut into blocks. */
static void test_gru_eprop_block_cuts(void **state)
{
    fixture *f = *state;
    static streams st;
    static run_out one, cut;
    static double gp[4][SG * SD];
    sched s1, s4;
    double e_cut = 0.0, e_ref;
    memset(&s1, 0, sizeof s1);
    s1.B = 2, s1.T = 28, s1.nblk = 1;
    s1.len[0][0] = 28, s1.len[0][1] = 25;
    s1.flags[0][0] = s1.flags[0][1] = CLAPP_LANE_SEQ_START;
    memset(&s4, 0, sizeof s4);
    s4.B = 2, s4.T = 7, s4.nblk = 4;
    for (int k = 0; k < 4; k++)
        s4.len[k][0] = s4.len[k][1] = 7;
    s4.len[3][1] = 4;
    s4.flags[0][0] = s4.flags[0][1] = CLAPP_LANE_SEQ_START;
    make_streams(&st, 3);
    run_sched(f, &s1, &st, "eprop", "block", 1, 1, 1.5f, &one);
    run_sched(f, &s4, &st, "eprop", "block", 1, 1, 1.5f, &cut);
    for (int k = 0; k < 4; k++)
        e_cut = fmax(e_cut, rel_err_ff(cut.gw[k], one.gw[k], PN[k]));
    ref_grads(&s1, &st, &one, 0, 0, gp, NULL, NULL);
    e_ref = rel_err_grads(&one, gp, 0, "");
    printf("  one block of 28 vs 4 blocks of 7: rel diff %.2e (one block vs ref %.2e)\n", e_cut, e_ref);
    assert_true(e_cut < 1e-5);
    assert_true(e_ref < 1e-5);
    assert_true(tu_max_abs_diff(&one.h[0][0][0], &cut.h[0][0][0], (size_t)MAXB * MAXS * SH) < 1e-6);
}

/* 3. The block_grad reference against finite differences where block_grad
 *    changes nothing (one step from a constant nonzero h), and mode=bptt
 *    against central differences of the standard GRU loss per block. */
static void test_gru_finite_differences(void **state)
{
    fixture *f = *state;
    static streams st;
    static run_out o;
    static refw R, Rp;
    static lane_data L[MAXB], Lp;
    static rec r;
    static double gp[4][SG * SD], fd[4][SG * SD], dx[MAXB][MAXS][SD], fdx[MAXB][MAXS][SD];
    static double hfix[MAXB][MAXS][SH];
    const double eps = 1e-5;
    sched sc;
    uint64_t rs = 99;
    double e1 = 0.0, e1x, ebptt = 0.0, ex;

    /* (a) T = 1, h_{-1} fixed and nonzero. */
    make_streams(&st, 4);
    for (int k = 0; k < 4; k++)
        for (int64_t j = 0; j < PN[k]; j++)
            R.p[k][j] = 0.6 * rng_unif(&rs);
    memset(&L[0], 0, sizeof L[0]);
    L[0].S = 1;
    L[0].bstart[0] = 1;
    for (int d = 0; d < SD; d++)
        L[0].x[0][d] = st.x[0][0][d];
    for (int i = 0; i < SH; i++) {
        L[0].c[0][i] = st.c[0][0][i];
        hfix[0][0][i] = 0.8 * rng_unif(&rs);
    }
    {
        unsigned char stop[1] = {1};
        double g1[4][SG * SD] = {{0}}, d1[1][SD], f1x[1][SD];
        ref_forward(&R, &L[0], hfix[0], &r);
        ref_backward(&R, &L[0], &r, stop, 0, g1, d1);
        for (int k = 0; k < 4; k++)
            for (int64_t j = 0; j < PN[k]; j++) {
                double lp, lm, keep = R.p[k][j];
                R.p[k][j] = keep + eps;
                lp = ref_loss(&R, &L[0], hfix[0]);
                R.p[k][j] = keep - eps;
                lm = ref_loss(&R, &L[0], hfix[0]);
                R.p[k][j] = keep;
                fd[k][j] = (lp - lm) / (2 * eps);
            }
        for (int d = 0; d < SD; d++) {
            double lp, lm, keep = L[0].x[0][d];
            L[0].x[0][d] = keep + eps;
            lp = ref_loss(&R, &L[0], hfix[0]);
            L[0].x[0][d] = keep - eps;
            lm = ref_loss(&R, &L[0], hfix[0]);
            L[0].x[0][d] = keep;
            f1x[0][d] = (lp - lm) / (2 * eps);
        }
        for (int k = 0; k < 4; k++)
            e1 = fmax(e1, rel_err_dd(g1[k], fd[k], PN[k]));
        e1x = rel_err_dd(d1[0], f1x[0], SD);
        printf("  block_grad reference, T=1: rel err vs FD %.2e (params), %.2e (x)\n", e1, e1x);
        assert_true(e1 < 1e-7);
        assert_true(e1x < 1e-7);
    }

    /* (b) mode=bptt over the main schedule vs FD with each block's start state held fixed. */
    main_sched(&sc);
    run_sched(f, &sc, &st, "bptt", "block", 1, 1, 1.5f, &o);
    refw_from(&R, &o.w[0][0]);
    for (int b = 0; b < sc.B; b++) {
        lane_gather(&sc, &st, b, &L[b]);
        ref_forward(&R, &L[b], NULL, &r);
        memcpy(hfix[b], r.hp, sizeof r.hp);
    }
    memset(fd, 0, sizeof fd);
    for (int k = 0; k < 4; k++)
        for (int64_t j = 0; j < PN[k]; j++) {
            Rp = R;
            for (int sgn = -1; sgn <= 1; sgn += 2) {
                Rp.p[k][j] = R.p[k][j] + sgn * eps;
                for (int b = 0; b < sc.B; b++)
                    fd[k][j] += sgn * ref_loss(&Rp, &L[b], hfix[b]) / (2 * eps);
            }
        }
    for (int b = 0; b < sc.B; b++)
        for (int s = 0; s < L[b].S; s++)
            for (int d = 0; d < SD; d++) {
                Lp = L[b];
                Lp.x[s][d] = L[b].x[s][d] + eps;
                fdx[b][s][d] = ref_loss(&R, &Lp, hfix[b]);
                Lp.x[s][d] = L[b].x[s][d] - eps;
                fdx[b][s][d] = (fdx[b][s][d] - ref_loss(&R, &Lp, hfix[b])) / (2 * eps);
            }
    ebptt = rel_err_grads(&o, fd, 1, "bptt vs FD");
    ex = rel_err_gin(&sc, &o, fdx);
    printf("  bptt grad_in vs FD rel err %.2e\n", ex);
    assert_true(ebptt < 1e-3);
    assert_true(ex < 1e-3);
    /* And tighter against the double BPTT reference (same truncation). */
    ref_grads(&sc, &st, &o, 1, 1, gp, dx, NULL);
    printf("  bptt vs double reference: %.2e (params), %.2e (grad_in)\n", rel_err_grads(&o, gp, 0, ""),
           rel_err_gin(&sc, &o, dx));
    assert_true(rel_err_grads(&o, gp, 0, "") < 1e-5);
    assert_true(rel_err_gin(&sc, &o, dx) < 1e-5);
}

/* 4. The plain per-step trace form equals the block form, and the reference. */
static void test_gru_step_form_equals_block_form(void **state)
{
    fixture *f = *state;
    static streams st;
    static run_out ob, os;
    static double gp[4][SG * SD], dx[MAXB][MAXS][SD], dx_unused[MAXB][MAXS][SD];
    sched sc;
    double e = 0.0, eref;
    main_sched(&sc);
    make_streams(&st, 5);
    run_sched(f, &sc, &st, "eprop", "block", 1, 1, 1.5f, &ob);
    run_sched(f, &sc, &st, "eprop", "step", 1, 1, 1.5f, &os);
    for (int k = 0; k < 4; k++) {
        double ek = rel_err_ff(os.gw[k], ob.gw[k], PN[k]);
        printf("  step vs block %-9s rel diff %.2e\n", PNAME[k], ek);
        e = fmax(e, ek);
    }
    assert_true(e < 1e-5);
    assert_true(tu_max_abs_diff(&os.gin[0][0][0], &ob.gin[0][0][0], (size_t)MAXB * MAXS * SD) < 1e-6);
    ref_grads(&sc, &st, &os, 0, 0, gp, dx_unused, NULL);
    eref = rel_err_grads(&os, gp, 0, "");
    ref_grads(&sc, &st, &os, 0, 1, gp, dx, NULL);
    printf("  step form vs reference: %.2e (params), %.2e (grad_in)\n", eref, rel_err_gin(&sc, &os, dx));
    assert_true(eref < 1e-5);
}

static int64_t report_int(const char *json, const char *key)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(json, pat);
    assert_non_null(p);
    return strtoll(p + strlen(pat), NULL, 10);
}

/* 5. Trace memory for the paper's sizes, independent of the block length. */
static void test_gru_trace_memory(void **state)
{
    fixture *f = *state;
    clapp_param_value v[8];
    clapp_create_info ci;
    clapp_stream_info si, so;
    char buf[512];
    int64_t floats[2], bytes[2];
    const int64_t T[2] = {128, 1024};
    void *self = NULL;
    fill_values(f->desc, 256, "eprop", "block", v);
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &f->host;
    ci.instance_name = "gru";
    ci.values = v;
    ci.n_values = f->desc->n_params;
    ci.seed = 1;
    assert_int_equal(f->desc->create(&ci, &self), CLAPP_OK);
    assert_int_equal(f->desc->report(self, buf, sizeof buf), CLAPP_E_STATE);
    for (int k = 0; k < 2; k++) {
        memset(&si, 0, sizeof si);
        si.ndim = 3;
        si.shape[0] = 8;
        si.shape[1] = 512;
        si.shape[2] = T[k];
        si.rate = 100.0;
        assert_int_equal(f->desc->configure(self, &si, &so), CLAPP_OK);
        assert_int_equal(f->desc->report(self, buf, sizeof buf), CLAPP_OK);
        floats[k] = report_int(buf, "trace_floats_per_lane");
        bytes[k] = report_int(buf, "trace_bytes");
        printf("  T=%-5lld %s\n", (long long)T[k], buf);
    }
    printf("  trace state: %lld floats per lane (%.2f MB), %.1f MB for 8 lanes\n", (long long)floats[0],
           floats[0] * 4.0 / 1e6, bytes[0] / 1e6);
    assert_int_equal(floats[0], 3 * 256 * 512 + 3 * 256 * 256 + 6 * 256);
    assert_int_equal(floats[0], 591360);
    assert_int_equal(bytes[0], 8 * 591360 * 4);
    assert_int_equal(floats[1], floats[0]);
    assert_int_equal(bytes[1], bytes[0]);
    assert_int_equal(f->desc->report(self, buf, 8), CLAPP_E_NOMEM);
    f->desc->destroy(self);

    /* BPTT keeps no traces. */
    {
        inst I;
        inst_open(&I, f, SH, "bptt", "block", 1, 2, SD, 7);
        assert_int_equal(I.d->report(I.self, buf, sizeof buf), CLAPP_OK);
        assert_int_equal(report_int(buf, "trace_bytes"), 0);
        inst_close(&I);
    }
}

/* 6. Same seed -> identical weights; another seed -> different; range U(±1/sqrt(H)). */
static void test_gru_seed(void **state)
{
    fixture *f = *state;
    inst a, b, c;
    const int64_t H = 16, D = 9;
    const double bound = 1.0 / sqrt((double)H);
    inst_open(&a, f, H, "eprop", "block", 42, 2, D, 5);
    inst_open(&b, f, H, "eprop", "block", 42, 3, D, 11);
    inst_open(&c, f, H, "eprop", "block", 43, 2, D, 5);
    for (int k = 0; k < 4; k++) {
        const int64_t n = clapp_tensor_numel(a.w[k]);
        double amax = 0.0, mean = 0.0;
        assert_memory_equal(a.w[k]->data, b.w[k]->data, (size_t)n * sizeof(float));
        assert_memory_not_equal(a.w[k]->data, c.w[k]->data, (size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            amax = fmax(amax, fabs(a.w[k]->data[i]));
            mean += a.w[k]->data[i] / (double)n;
            assert_true(a.gw[k]->data[i] == 0.0f);
        }
        assert_true(amax <= bound);
        if (n >= 144) { /* weights: the range is used and centred */
            assert_true(amax > 0.9 * bound);
            assert_true(fabs(mean) < 0.1 * bound);
        }
    }
    inst_close(&a);
    inst_close(&b);
    inst_close(&c);
}

/* Lifecycle and error paths. */
static void test_gru_errors(void **state)
{
    fixture *f = *state;
    inst I;
    clapp_stream_info si, so;
    memset(&si, 0, sizeof si);
    inst_open(&I, f, SH, "eprop", "block", 1, 2, SD, 7);
    /* backward before any forward */
    tu_log_clear(&f->log);
    assert_int_equal(I.d->backward(I.self, &I.gout, NULL), CLAPP_E_STATE);
    assert_int_equal(f->log.n_errors, 1);
    /* a lane longer than the block */
    I.in.lane[0].len = 8;
    assert_int_equal(I.d->forward(I.self, &I.in, &I.out), CLAPP_E_SHAPE);
    I.in.lane[0].len = 7;
    I.in.lane[1].len = 7;
    assert_int_equal(I.d->forward(I.self, &I.in, &I.out), CLAPP_OK);
    /* a gradient of the wrong shape */
    {
        clapp_tensor bad = I.gout;
        bad.shape[1] = SH + 1;
        assert_int_equal(I.d->backward(I.self, &bad, NULL), CLAPP_E_SHAPE);
    }
    assert_int_equal(I.d->backward(I.self, &I.gout, NULL), CLAPP_OK);
    /* frozen: no backward */
    assert_int_equal(I.d->set_mode(I.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    assert_int_equal(I.d->forward(I.self, &I.in, &I.out), CLAPP_OK);
    assert_int_equal(I.d->backward(I.self, &I.gout, NULL), CLAPP_E_STATE);
    assert_int_equal(I.d->reset(I.self, 2), CLAPP_E_INVAL);
    assert_int_equal(I.d->reset(I.self, -1), CLAPP_OK);
    /* a 5-D input is refused */
    si.ndim = 5;
    si.shape[0] = 2, si.shape[1] = 3, si.shape[2] = 4, si.shape[3] = 5, si.shape[4] = 6;
    assert_int_equal(I.d->configure(I.self, &si, &so), CLAPP_E_SHAPE);
    inst_close(&I);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Timing at the paper's sizes (printed, not asserted). */
static void test_gru_timing(void **state)
{
    fixture *f = *state;
    const char *rules[3] = {"eprop", "bptt", "eprop"};
    const char *forms[3] = {"block", "block", "step"};
#ifdef CLAPP_SANITIZED
    const int reps[3] = {2, 2, 1};
#else
    const int reps[3] = {4, 4, 2};
#endif
    for (int m = 0; m < 3; m++) {
        inst I;
        uint64_t rs = 5;
        double tf = 0.0, tb = 0.0;
        inst_open(&I, f, 256, rules[m], forms[m], 1, 8, 512, 128);
        for (int64_t i = 0; i < clapp_tensor_numel(&I.in.x); i++)
            I.in.x.data[i] = rng_unif(&rs);
        for (int64_t i = 0; i < clapp_tensor_numel(&I.gout); i++)
            I.gout.data[i] = 0.01f * rng_unif(&rs);
        for (int b = 0; b < 8; b++)
            I.in.lane[b].len = 128;
        /* One warm-up block, then reps blocks; each forward after the first also advances the traces. */
        for (int k = 0; k <= reps[m]; k++) {
            double t0, t1, t2;
            for (int b = 0; b < 8; b++)
                I.in.lane[b].flags = k == 0 ? CLAPP_LANE_SEQ_START : 0;
            memcpy(I.out.lane, I.in.lane, 8 * sizeof(clapp_lane));
            t0 = now_s();
            assert_int_equal(I.d->forward(I.self, &I.in, &I.out), CLAPP_OK);
            t1 = now_s();
            clapp_tensor_zero(&I.gin);
            assert_int_equal(I.d->backward(I.self, &I.gout, &I.gin), CLAPP_OK);
            t2 = now_s();
            if (k > 0)
                tf += t1 - t0, tb += t2 - t1;
        }
        printf("  B=8 D=512 H=256 T=128 mode=%s traces=%s: forward %.1f ms, backward %.1f ms per block "
               "(%.3f s of 1.28 s audio per block)\n",
               rules[m], forms[m], 1e3 * tf / reps[m], 1e3 * tb / reps[m], (tf + tb) / reps[m]);
        inst_close(&I);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gru_descriptor),
        cmocka_unit_test(test_gru_forward_reference),
        cmocka_unit_test(test_gru_eprop_vs_blockgrad_bptt),
        cmocka_unit_test(test_gru_eprop_block_cuts),
        cmocka_unit_test(test_gru_finite_differences),
        cmocka_unit_test(test_gru_step_form_equals_block_form),
        cmocka_unit_test(test_gru_trace_memory),
        cmocka_unit_test(test_gru_seed),
        cmocka_unit_test(test_gru_errors),
        cmocka_unit_test(test_gru_timing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
