/* clapp validate PLUGIN.so: check a plugin against the ABI contract.
 *
 * For every layer the file provides: create/configure on a small input
 * (the first of a few candidate shapes the layer accepts), a refused shape
 * and re-configure, destroy after a partial lifecycle, two instances with the
 * same seed give bit-identical tensors and outputs, one instance forwards
 * the same sequence twice identically (SEQ_START resets its state), its
 * tensors copied into an instance with another seed reproduce its output
 * bit for bit (the tensor list holds all of its state: what a checkpoint
 * saves), set_mode both ways, backward called twice adds twice, and finite
 * differences of L = sum(coef * out) against backward for sampled parameter
 * entries and input entries. Sinks: the lifecycle only (create, configure,
 * tensors, set_mode, reset, finish, destroy).
 *
 * The work happens in a temporary folder (the current directory during the
 * checks), so sinks that write files leave nothing behind.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clapp/clapp.h"
#include "clapp/plugin_util.h"
#include "cli.h"

#define V_SAMPLES 24      /* finite-difference samples per tensor */
#define V_MAX_SETS 64

typedef struct vctx {
    const clapp_plugin_desc *d;
    const clapp_param_value *values;
    int32_t                  n_values;
    const clapp_host        *host;
    clapp_stream_info        in;      /* accepted input */
    clapp_stream_info        out;
    int                      fails, checks;
    int                      verbose;
    uint64_t                 rng;
} vctx;

static void check(vctx *v, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(vctx *v, int ok, const char *fmt, ...)
{
    va_list ap;
    v->checks++;
    if (!ok)
        v->fails++;
    printf("  [%s] ", ok ? " ok " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static double v_unit(uint64_t *s)
{
    return clapp_uniform53(s);
}

static int v_create(vctx *v, uint64_t seed, void **inst)
{
    clapp_create_info ci;
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = v->host;
    ci.instance_name = v->d->id;
    ci.values = v->values;
    ci.n_values = v->n_values;
    ci.seed = seed;
    *inst = NULL;
    return v->d->create(&ci, inst);
}

/* Create and configure an instance on v->in. */
static int v_make(vctx *v, uint64_t seed, void **inst)
{
    clapp_stream_info out;
    int rc = v_create(v, seed, inst);
    if (rc == CLAPP_OK)
        rc = v->d->configure(*inst, &v->in, v->d->kind == CLAPP_KIND_LAYER ? &out : NULL);
    if (rc < 0) {
        v->d->destroy(*inst);
        *inst = NULL;
    }
    return rc;
}

/* Candidate inputs, small enough for finite differences. */
static const clapp_stream_info v_shapes[] = {
    {3, {2, 1, 160, 0, 0, 0}, 16000.0},
    {3, {2, 3, 64, 0, 0, 0}, 100.0},
    {5, {2, 3, 4, 12, 12, 0}, 25.0},
    {5, {2, 1, 4, 12, 12, 0}, 25.0},
};

/* A block over `info`: lane b holds a sequence of len T (lane 0) or 3T/4. */
static int block_alloc(clapp_block *b, const clapp_stream_info *info, int inputs)
{
    memset(b, 0, sizeof *b);
    if (clapp_tensor_alloc_shape(&b->x, info->ndim, info->shape) < 0)
        return CLAPP_E_NOMEM;
    b->lanes = (int32_t)info->shape[0];
    b->rate = info->rate;
    b->lane = calloc((size_t)b->lanes, sizeof *b->lane);
    if (!b->lane)
        return CLAPP_E_NOMEM;
    for (int32_t l = 0; inputs && l < b->lanes; l++) {
        b->lane[l].seq_id = l;
        b->lane[l].seq_name = l ? "validate1" : "validate0";
        b->lane[l].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        b->lane[l].len = (int32_t)(l ? info->shape[2] * 3 / 4 : info->shape[2]);
        b->lane[l].class_label = -1;
    }
    return CLAPP_OK;
}

static void block_free(clapp_block *b)
{
    clapp_tensor_free(&b->x);
    free(b->lane);
    memset(b, 0, sizeof *b);
}

/* Per-lane and per-time size of a block's layout [B, C, T, (H, W)]. */
static int64_t hw_of(const clapp_tensor *t)
{
    return t->ndim == 5 ? t->shape[3] * t->shape[4] : 1;
}

/* Zero the steps past each lane's len (the host's contract for inputs). */
static void mask_invalid(clapp_tensor *x, const clapp_block *b, float *fill_valid, uint64_t *rng)
{
    int64_t C = x->shape[1], T = x->shape[2], hw = hw_of(x);
    for (int64_t l = 0; l < x->shape[0]; l++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t k = 0; k < hw; k++) {
                    float *p = &x->data[((l * C + c) * T + t) * hw + k];
                    if (t >= b->lane[l].len)
                        *p = 0;
                    else if (fill_valid)
                        *p = (float)(2.0 * v_unit(rng) - 1.0) * *fill_valid;
                }
}

static int v_forward(vctx *v, void *inst, const clapp_block *in, clapp_block *out)
{
    memcpy(out->lane, in->lane, (size_t)in->lanes * sizeof *in->lane);
    out->rate = v->out.rate;
    clapp_tensor_zero(&out->x);
    return v->d->forward(inst, in, out);
}

/* L = sum over valid output steps of coef * out, in double. */
static double v_loss(const clapp_block *out, const clapp_tensor *coef)
{
    int64_t C = out->x.shape[1], T = out->x.shape[2], hw = hw_of(&out->x);
    double L = 0;
    for (int64_t l = 0; l < out->x.shape[0]; l++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < out->lane[l].len && t < T; t++)
                for (int64_t k = 0; k < hw; k++) {
                    int64_t i = ((l * C + c) * T + t) * hw + k;
                    L += (double)coef->data[i] * (double)out->x.data[i];
                }
    return L;
}

static int same_bits(const clapp_tensor *a, const clapp_tensor *b)
{
    return clapp_tensor_numel(a) == clapp_tensor_numel(b) &&
           memcmp(a->data, b->data, (size_t)clapp_tensor_numel(a) * sizeof(float)) == 0;
}

static int all_finite(const clapp_tensor *t)
{
    for (int64_t i = 0; i < clapp_tensor_numel(t); i++)
        if (!isfinite(t->data[i]))
            return 0;
    return 1;
}

/* Finite differences of one float array against the analytical gradient,
 * at up to V_SAMPLES entries from `idx` (n candidates). */
typedef struct fd_result {
    int    samples, bad, kinks;
    double worst, worst_num, worst_ana;
} fd_result;

static int fd_check(vctx *v, void *inst, const clapp_block *in, clapp_block *out,
                    const clapp_tensor *coef, float *values, const float *ana, const int64_t *idx,
                    int64_t n, int64_t n_ana, fd_result *r)
{
    /* Steps from large to small: float32 noise in L favours large steps,
     * kinks (ReLU, max-pool) small ones; a sample passes when one step agrees
     * with backward and no step is smooth-but-different. A wrong gradient
     * disagrees at every step. */
    static const double steps[3] = {1e-2, 1e-3, 1e-4};
    double gmax = 0;
    int64_t pick[V_SAMPLES];
    int np = 0, rc;
    double l0;
    memset(r, 0, sizeof *r);
    if ((rc = v_forward(v, inst, in, out)) < 0)
        return rc;
    l0 = v_loss(out, coef);
    for (int64_t i = 0; i < n_ana; i++)
        gmax = fmax(gmax, fabs(ana[i]));
    for (int s = 0; s < V_SAMPLES && n > 0; s++)
        pick[np++] = idx ? idx[(int64_t)(v_unit(&v->rng) * (double)n)] : (int64_t)(v_unit(&v->rng) * (double)n);
    for (int s = 0; s < np; s++) {
        int64_t i = pick[s];
        float keep = values[i];
        int agree = 0, smooth_any = 0;
        double best = INFINITY, best_num = 0;
        for (int k = 0; k < 3 && !agree; k++) {
            double h = steps[k], lp, lm, num, err, tol;
            int smooth;
            values[i] = (float)(keep + h);
            if ((rc = v_forward(v, inst, in, out)) < 0)
                return rc;
            lp = v_loss(out, coef);
            values[i] = (float)(keep - h);
            if ((rc = v_forward(v, inst, in, out)) < 0)
                return rc;
            lm = v_loss(out, coef);
            values[i] = keep;
            /* the perturbation actually applied, after float rounding */
            num = (lp - lm) / ((double)(float)(keep + h) - (double)(float)(keep - h));
            smooth = fabs(lp - 2.0 * l0 + lm) <= 0.05 * fabs(lp - lm) + 1e-7 * (fabs(l0) + 1.0);
            smooth_any |= smooth;
            err = fabs(num - ana[i]);
            tol = 2e-2 * fmax(fabs(num), fabs(ana[i])) + 1e-2 * fmax(gmax, 1e-6);
            agree = err <= tol;
            if (err / tol < best) {
                best = err / tol;
                best_num = num;
            }
        }
        values[i] = keep;
        r->samples++;
        if (!agree && !smooth_any) {
            r->kinks++;
            continue;
        }
        if (!agree)
            r->bad++;
        if (best > r->worst || (r->worst == 0 && s == 0)) {
            r->worst = best;
            r->worst_num = best_num;
            r->worst_ana = ana[i];
        }
    }
    return CLAPP_OK;
}

/* Every smooth sample must agree; at most half may be skipped as kinks. */
static int fd_ok(const fd_result *r)
{
    return r->samples > 0 && r->bad == 0 && 2 * r->kinks <= r->samples;
}

static void validate_layer(vctx *v, uint64_t seed)
{
    void *a = NULL, *b = NULL, *c = NULL;
    clapp_block in = {0}, out = {0}, out2 = {0};
    clapp_tensor coef = {0}, gin = {0}, gin2 = {0};
    const clapp_named_tensor *ta = NULL, *tb = NULL, *tc = NULL;
    int32_t na = 0, nb = 0, nc = 0;
    float **grad_keep = NULL;
    float amp = 1.0f;
    int rc, ok;

    rc = v_make(v, seed, &a);
    check(v, rc == CLAPP_OK, "create + configure on [%lld, %lld, %lld%s] (status %d)",
          (long long)v->in.shape[0], (long long)v->in.shape[1], (long long)v->in.shape[2],
          v->in.ndim == 5 ? ", H, W" : "", rc);
    if (rc < 0)
        goto done;
    rc = v->d->configure(a, &v->in, &v->out);
    check(v, rc == CLAPP_OK && v->out.ndim == v->in.ndim && v->out.shape[0] == v->in.shape[0] &&
          v->out.rate > 0, "re-configure gives [%lld, %lld, %lld] at %g/s", (long long)v->out.shape[0],
          (long long)v->out.shape[1], (long long)v->out.shape[2], v->out.rate);
    if (rc < 0)
        goto done;
    if (block_alloc(&in, &v->in, 1) < 0 || block_alloc(&out, &v->out, 0) < 0 ||
        block_alloc(&out2, &v->out, 0) < 0 || clapp_tensor_alloc_shape(&coef, v->out.ndim, v->out.shape) < 0 ||
        clapp_tensor_alloc_shape(&gin, v->in.ndim, v->in.shape) < 0 ||
        clapp_tensor_alloc_shape(&gin2, v->in.ndim, v->in.shape) < 0) {
        check(v, 0, "out of memory");
        goto done;
    }
    mask_invalid(&in.x, &in, &amp, &v->rng);

    /* Determinism: same seed, same tensors and outputs. */
    rc = v_make(v, seed, &b);
    if (rc == CLAPP_OK && v->d->tensors) {
        v->d->tensors(a, &ta, &na);
        v->d->tensors(b, &tb, &nb);
    }
    ok = rc == CLAPP_OK && na == nb;
    for (int32_t i = 0; ok && i < na; i++)
        ok = !strcmp(ta[i].name, tb[i].name) && same_bits(ta[i].value, tb[i].value);
    check(v, ok, "same seed: %d tensors bit-identical", (int)na);
    ok = rc == CLAPP_OK && v_forward(v, a, &in, &out) == CLAPP_OK && v_forward(v, b, &in, &out2) == CLAPP_OK &&
         same_bits(&out.x, &out2.x) && all_finite(&out.x);
    check(v, ok, "same seed: outputs bit-identical and finite");
    for (int32_t l = 0; ok && l < out.lanes; l++)
        ok = out.lane[l].len >= 0 && out.lane[l].len <= v->out.shape[2];
    check(v, ok, "output lane lengths within [0, T] (%d, %d)", out.lane[0].len,
          out.lanes > 1 ? out.lane[1].len : 0);
    ok = v_forward(v, a, &in, &out2) == CLAPP_OK && same_bits(&out.x, &out2.x);
    check(v, ok, "forward of the same sequence twice (SEQ_START resets state): identical");
    ok = v->d->reset(a, -1) == CLAPP_OK && v->d->reset(a, 0) == CLAPP_OK &&
         v_forward(v, a, &in, &out2) == CLAPP_OK && same_bits(&out.x, &out2.x);
    check(v, ok, "reset (all lanes, one lane) then forward: identical");

    /* Round trip: a's tensors into an instance with another seed. */
    rc = v_make(v, seed + 7919, &c);
    if (rc == CLAPP_OK && v->d->tensors)
        v->d->tensors(c, &tc, &nc);
    ok = rc == CLAPP_OK && nc == na;
    for (int32_t i = 0; ok && i < na; i++) {
        ok = !strcmp(ta[i].name, tc[i].name) && ta[i].value->ndim == tc[i].value->ndim &&
             clapp_tensor_numel(ta[i].value) == clapp_tensor_numel(tc[i].value);
        if (ok)
            memcpy(tc[i].value->data, ta[i].value->data,
                   (size_t)clapp_tensor_numel(ta[i].value) * sizeof(float));
    }
    ok = ok && v_forward(v, c, &in, &out2) == CLAPP_OK && same_bits(&out.x, &out2.x);
    check(v, ok, "save/load round trip: tensors copied into an instance of another seed reproduce "
          "the output bit for bit");

    /* Modes. */
    if (v->d->set_mode) {
        ok = v->d->set_mode(a, CLAPP_MODE_FROZEN) == CLAPP_OK && v_forward(v, a, &in, &out2) == CLAPP_OK &&
             all_finite(&out2.x) && v->d->set_mode(a, CLAPP_MODE_LEARN) == CLAPP_OK &&
             v_forward(v, a, &in, &out2) == CLAPP_OK && same_bits(&out.x, &out2.x);
        check(v, ok, "set_mode FROZEN then LEARN: forward works, LEARN output unchanged");
    }

    /* Backward: twice adds twice; then finite differences. */
    for (int32_t i = 0; i < na; i++)
        if (ta[i].grad)
            clapp_tensor_zero(ta[i].grad);
    {
        float one = 1.0f;
        mask_invalid(&coef, &out, &one, &v->rng);
    }
    ok = v_forward(v, a, &in, &out) == CLAPP_OK;
    mask_invalid(&coef, &out, NULL, NULL);   /* zero past each output lane's len */
    clapp_tensor_zero(&gin);
    clapp_tensor_zero(&gin2);
    ok = ok && v->d->backward(a, &coef, &gin) == CLAPP_OK && all_finite(&gin);
    grad_keep = calloc((size_t)na + 1, sizeof *grad_keep);
    for (int32_t i = 0; ok && grad_keep && i < na; i++) {
        if (!ta[i].grad)
            continue;
        grad_keep[i] = malloc((size_t)clapp_tensor_numel(ta[i].grad) * sizeof(float) + 1);
        if (!grad_keep[i] || !all_finite(ta[i].grad))
            ok = 0;
        else
            memcpy(grad_keep[i], ta[i].grad->data, (size_t)clapp_tensor_numel(ta[i].grad) * sizeof(float));
    }
    check(v, ok && grad_keep, "backward: finite gradients");
    if (!ok || !grad_keep)
        goto done;
    ok = v->d->backward(a, &coef, &gin2) == CLAPP_OK;
    {
        /* deviations relative to each tensor's largest gradient (float summation order may differ) */
        double worst = 0, dev = 0, big = 1e-30;
        for (int64_t k = 0; ok && k < clapp_tensor_numel(&gin); k++) {
            dev = fmax(dev, fabs(gin2.data[k] - gin.data[k]));
            big = fmax(big, fabs(gin.data[k]));
        }
        worst = dev / big;
        for (int32_t i = 0; ok && i < na; i++) {
            dev = 0;
            big = 1e-30;
            for (int64_t k = 0; ta[i].grad && k < clapp_tensor_numel(ta[i].grad); k++) {
                dev = fmax(dev, fabs(ta[i].grad->data[k] - 2.0 * grad_keep[i][k]));
                big = fmax(big, fabs(grad_keep[i][k]));
            }
            worst = fmax(worst, dev / big);
        }
        check(v, ok && worst < 1e-4, "backward twice: parameter gradients accumulate (x2), grad_in is "
              "added into a zeroed tensor (max rel. deviation %.2g)", worst);
    }
    for (int32_t i = 0; i < na; i++) {
        fd_result r;
        if (!ta[i].grad)
            continue;
        if (fd_check(v, a, &in, &out, &coef, ta[i].value->data, grad_keep[i], NULL,
                     clapp_tensor_numel(ta[i].value), clapp_tensor_numel(ta[i].value), &r) < 0) {
            check(v, 0, "finite differences of %s: forward failed", ta[i].name);
            continue;
        }
        check(v, fd_ok(&r), "finite differences of %s: %d/%d samples within tolerance, %d skipped "
              "at kinks (worst: numeric %.5g vs backward %.5g)", ta[i].name, r.samples - r.bad, r.samples,
              r.kinks, r.worst_num, r.worst_ana);
    }
    {
        /* Input entries at valid steps only. */
        int64_t C = in.x.shape[1], T = in.x.shape[2], hw = hw_of(&in.x), n = 0;
        int64_t *idx = malloc((size_t)clapp_tensor_numel(&in.x) * sizeof *idx);
        fd_result r;
        for (int64_t l = 0; idx && l < in.x.shape[0]; l++)
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t t = 0; t < in.lane[l].len; t++)
                    for (int64_t k = 0; k < hw; k++)
                        idx[n++] = ((l * C + ch) * T + t) * hw + k;
        if (idx && fd_check(v, a, &in, &out, &coef, in.x.data, gin.data, idx, n, clapp_tensor_numel(&gin), &r) == CLAPP_OK)
            check(v, fd_ok(&r), "finite differences of the input (grad_in): %d/%d samples within "
                  "tolerance, %d skipped at kinks (worst: numeric %.5g vs backward %.5g)", r.samples - r.bad,
                  r.samples, r.kinks, r.worst_num, r.worst_ana);
        else
            check(v, 0, "finite differences of the input: forward failed or out of memory");
        free(idx);
    }
done:
    for (int32_t i = 0; grad_keep && i < na; i++)
        free(grad_keep[i]);
    free(grad_keep);
    if (a)
        v->d->destroy(a);
    if (b)
        v->d->destroy(b);
    if (c)
        v->d->destroy(c);
    block_free(&in);
    block_free(&out);
    block_free(&out2);
    clapp_tensor_free(&coef);
    clapp_tensor_free(&gin);
    clapp_tensor_free(&gin2);
}

static void validate_sink(vctx *v, uint64_t seed)
{
    void *a = NULL;
    const clapp_named_tensor *t = NULL;
    int32_t n = 0;
    int rc = v_make(v, seed, &a);
    check(v, rc == CLAPP_OK, "create + configure on [%lld, %lld, %lld%s] (status %d)",
          (long long)v->in.shape[0], (long long)v->in.shape[1], (long long)v->in.shape[2],
          v->in.ndim == 5 ? ", H, W" : "", rc);
    if (rc < 0)
        return;
    check(v, v->d->configure(a, &v->in, NULL) == CLAPP_OK, "re-configure");
    if (v->d->tensors) {
        int ok = v->d->tensors(a, &t, &n) == CLAPP_OK;
        for (int32_t i = 0; ok && i < n; i++)
            ok = t[i].name && t[i].value && t[i].value->data && all_finite(t[i].value);
        check(v, ok, "tensors: %d listed, allocated and finite", (int)n);
    }
    if (v->d->set_mode)
        check(v, v->d->set_mode(a, CLAPP_MODE_FROZEN) == CLAPP_OK &&
              v->d->set_mode(a, CLAPP_MODE_LEARN) == CLAPP_OK, "set_mode FROZEN and LEARN");
    check(v, v->d->reset(a, -1) == CLAPP_OK, "reset");
    if (v->d->finish)
        check(v, v->d->finish(a) == CLAPP_OK, "finish without data");
    v->d->destroy(a);
}

static int validate_desc(clapp_catalog *cat, int index, const clapp_plugin_desc *d, char **sets,
                         int n_sets, uint64_t seed, const clapp_host *host)
{
    const clapp_param_value *values = NULL;
    vctx v;
    void *inst = NULL;
    int rc, accepted = -1;
    clapp_host silent = {sizeof(clapp_host), NULL, NULL};

    memset(&v, 0, sizeof v);
    printf("%s %s (%s)\n", d->id, d->version, d->kind == CLAPP_KIND_LAYER ? "layer" : "sink");
    /* The host's own resolution gives the values, defaults filled in. */
    rc = clapp_catalog_values(cat, index, (const char *const *)sets, n_sets, &values);
    if (rc < 0) {
        printf("  [FAIL] parameters: %s\n", clapp_catalog_error(cat));
        return CLI_FAILED;
    }
    v.d = d;
    v.values = values;
    v.n_values = d->n_params;
    v.host = host;
    v.rng = seed * 0x2545F4914F6CDD1Dull + 1;

    /* destroy(NULL), and destroy after create alone. */
    d->destroy(NULL);
    rc = v_create(&v, seed, &inst);
    d->destroy(inst);
    check(&v, rc == CLAPP_OK, "destroy(NULL); create then destroy without configure");
    /* A 4-D input fits no block layout: configure must refuse it, destroy must still work. */
    v.host = &silent;   /* the refusal's log line is expected */
    rc = v_create(&v, seed, &inst);
    v.host = host;
    if (rc == CLAPP_OK) {
        clapp_stream_info bad = {4, {2, 1, 8, 8, 0, 0}, 10.0}, o;
        int crc = d->configure(inst, &bad, d->kind == CLAPP_KIND_LAYER ? &o : NULL);
        check(&v, crc < 0, "configure refuses a 4-D input (status %d); destroy after it", crc);
    }
    d->destroy(inst);
    inst = NULL;
    for (size_t s = 0; s < sizeof v_shapes / sizeof v_shapes[0] && accepted < 0; s++) {
        clapp_stream_info o;
        if (v_create(&v, seed, &inst) == CLAPP_OK &&
            d->configure(inst, &v_shapes[s], d->kind == CLAPP_KIND_LAYER ? &o : NULL) == CLAPP_OK)
            accepted = (int)s;
        d->destroy(inst);
        inst = NULL;
    }
    if (accepted < 0) {
        check(&v, 0, "configure accepts none of the test inputs ([2,1,160], [2,3,64], [2,3,4,12,12], "
              "[2,1,4,12,12]); give parameters with --set KEY=VALUE");
    } else {
        v.in = v_shapes[accepted];
        if (d->kind == CLAPP_KIND_LAYER)
            validate_layer(&v, seed);
        else
            validate_sink(&v, seed);
    }
    printf("  %s: %d of %d checks passed\n\n", d->id, v.checks - v.fails, v.checks);
    return v.fails ? CLI_FAILED : CLI_OK;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void validate_usage(void)
{
    printf("usage: clapp validate PLUGIN.so [--set KEY=VALUE]... [--seed S] [-v]\n"
           "Loads the plugin file and checks every element it provides against the ABI contract:\n"
           "lifecycle (create, configure, refused shapes, destroy after partial set-up), the same seed\n"
           "gives identical tensors and outputs, a sequence forwarded twice is identical, tensors\n"
           "copied into another instance reproduce its output (checkpoint round trip), set_mode,\n"
           "backward accumulation, and finite differences of backward (parameters and input) for\n"
           "L = sum(coef * out). Sinks: lifecycle only. --set gives the element's parameters (for\n"
           "elements whose defaults do not fit the small test inputs, or to pick an exact-gradient\n"
           "mode). Exit status 0: every check passed; 1: some failed; 2: bad command line or file.\n");
}

int cli_validate(int argc, char **argv)
{
    const char *file = NULL;
    char *sets[V_MAX_SETS];
    int n_sets = 0, verbosity = 0, status = CLI_OK, n_checked = 0;
    uint64_t seed = 1;
    clapp_host host;
    clapp_catalog *cat = NULL;
    clapp_options opt;
    char tmpl[] = "/tmp/clapp-validate-XXXXXX", *cwd = NULL;
    int n = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            validate_usage();
            return CLI_OK;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < V_MAX_SETS) {
            sets[n_sets++] = argv[++i];
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end) {
                fprintf(stderr, "clapp: error: --seed %s: expected a non-negative integer\n", argv[i]);
                return CLI_USAGE;
            }
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            verbosity = 2;
        } else if (argv[i][0] == '-' || file) {
            fprintf(stderr, "clapp: error: unexpected argument '%s' (see clapp validate --help)\n", argv[i]);
            return CLI_USAGE;
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        fprintf(stderr, "clapp: error: validate needs a plugin file (clapp validate PLUGIN.so)\n");
        return CLI_USAGE;
    }
    cli_host_init(&host, verbosity ? verbosity : 1);
    clapp_options_init(&opt);
    opt.log_level = verbosity ? verbosity : CLAPP_LOG_WARNING;
    if (clapp_catalog_create_file(&cat, file, &opt) < 0 || clapp_catalog_count(cat, &n) < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_catalog_error(cat));
        clapp_catalog_destroy(cat);
        return CLI_USAGE;
    }
    cwd = getcwd(NULL, 0);
    if (!cwd || !mkdtemp(tmpl) || chdir(tmpl) != 0) {
        fprintf(stderr, "clapp: error: cannot make a temporary folder for the checks\n");
        free(cwd);
        clapp_catalog_destroy(cat);
        return CLI_FAILED;
    }
    printf("validating %s (seed %llu)\n\n", file, (unsigned long long)seed);
    for (int i = 0; i < n; i++) {
        const clapp_plugin_desc *d = NULL;
        const char *from = NULL;
        if (clapp_catalog_element(cat, i, &d, &from) < 0 || !from)
            continue;   /* built in */
        n_checked++;
        if (validate_desc(cat, i, d, sets, n_sets, seed, &host) != CLI_OK)
            status = CLI_FAILED;
    }
    if (chdir(cwd) != 0)
        status = CLI_FAILED;
    nftw(tmpl, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(cwd);
    clapp_catalog_destroy(cat);
    if (!n_checked) {
        fprintf(stderr, "clapp: error: %s provides no element\n", file);
        return CLI_FAILED;
    }
    printf("%s: %s\n", file, status == CLI_OK ? "all checks passed" : "SOME CHECKS FAILED");
    return status;
}
