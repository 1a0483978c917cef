/* The supervised loss element (core/learning/loss_supervised.c).
 *
 * 1. an independent double formulation (loops: logits, log-softmax, the
 *    gradients of the mean cross-entropy), its gradients checked by central
 *    finite differences of its own loss, equals the engine's loss and
 *    gradients (input, weight, bias) within 1e-5 relative: frame and class
 *    labels, [B, C, T] and [B, C, T, H, W] streams; the engine's float
 *    gradients also match finite differences of its own loss (coarse);
 *    steps and clips without a label are skipped (no gradient there);
 * 2. frame labels are read as probe_phoneme reads them: in one graph a
 *    supervised element and a probe_phoneme see the same layer output (other
 *    rates, pts and label_pts offsets, -1 labels, missing label arrays, idle
 *    lanes, steps past the labels); the probe's frame count and per-label
 *    counts (its confusion rows) equal the supervised element's, whose
 *    per-step labels equal the documented formula; a label >= classes is
 *    refused;
 * 3. a tiny labelled pipeline (greedy: conv ! supervised ! conv ! supervised)
 *    trains: both losses fall and training accuracy rises; end to end, the
 *    gradient reaches the first layer; a run checkpointed and resumed
 *    half-way ends with the same tensors as the uninterrupted run.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "graph/graph.h"
#include "learning/loss_supervised.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

/* The classifier of a `supervised` graph node. */
static inline clapp_loss_supervised *node_loss_sup(const clapp_node *nd)
{
    return clapp_loss_supervised_of(nd->loss_form, nd->loss_self);
}

typedef struct trng { uint64_t s; } trng;
static double trand(trng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (double)(r->s >> 11) * 0x1.0p-53;
}
static double tnormal(trng *r)
{
    double u1 = trand(r) + 1e-12, u2 = trand(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double rel_err(const float *a, const double *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return m > 0 ? e / m : e;
}

/* ---- 1. the reference ------------------------------------------------------ */

typedef struct sblock {
    clapp_block blk;
    clapp_lane  lane[8];
    int32_t     labels[8][32];
} sblock;

/* Features of step t of lane b, flattened channel-major (c*HW + q). */
static double feat(const double *x, const int64_t *s, int ndim, int64_t b, int64_t d, int64_t t)
{
    int64_t HW = ndim == 5 ? s[3] * s[4] : 1, c = d / HW, q = d % HW;
    return x[((b * s[1] + c) * s[2] + t) * HW + q];
}
static int64_t feat_at(const int64_t *s, int ndim, int64_t b, int64_t d, int64_t t)
{
    int64_t HW = ndim == 5 ? s[3] * s[4] : 1, c = d / HW, q = d % HW;
    return ((b * s[1] + c) * s[2] + t) * HW + q;
}

/* rows: (lane, label, t0, t1): the row's features are the mean over steps
 * [t0, t1) (frames: one step). L = mean over rows of the cross-entropy. */
typedef struct rrow { int64_t b, y, t0, t1; } rrow;

static double ref_loss(const double *x, const int64_t *s, int ndim, const rrow *rows, int64_t n,
                       const double *W, const double *bias, int64_t K, double *dx, double *dW,
                       double *db)
{
    int64_t HW = ndim == 5 ? s[3] * s[4] : 1, D = s[1] * HW;
    double loss = 0.0, *f = malloc((size_t)D * sizeof *f), *z = malloc((size_t)K * sizeof *z);
    for (int64_t r = 0; r < n; r++) {
        const rrow *rw = &rows[r];
        double m = -INFINITY, sum = 0.0, lse, span = (double)(rw->t1 - rw->t0);
        for (int64_t d = 0; d < D; d++) {
            f[d] = 0.0;
            for (int64_t t = rw->t0; t < rw->t1; t++)
                f[d] += feat(x, s, ndim, rw->b, d, t);
            f[d] /= span;
        }
        for (int64_t k = 0; k < K; k++) {
            z[k] = bias[k];
            for (int64_t d = 0; d < D; d++)
                z[k] += W[k * D + d] * f[d];
            m = fmax(m, z[k]);
        }
        for (int64_t k = 0; k < K; k++)
            sum += exp(z[k] - m);
        lse = m + log(sum);
        loss += (lse - z[rw->y]) / (double)n;
        for (int64_t k = 0; k < K && dW; k++) {
            double g = (exp(z[k] - lse) - (k == rw->y)) / (double)n;
            db[k] += g;
            for (int64_t d = 0; d < D; d++) {
                dW[k * D + d] += g * f[d];
                for (int64_t t = rw->t0; t < rw->t1; t++)
                    dx[feat_at(s, ndim, rw->b, d, t)] += g * W[k * D + d] / span;
            }
        }
    }
    free(f);
    free(z);
    return loss;
}

static double *to_double(const float *a, int64_t n)
{
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = a[i];
    return d;
}

static double ref_fd(const double *x0, const int64_t *s, int ndim, const rrow *rows, int64_t n,
                     double *W, double *bias, int64_t K, double *p, const double *grad, int64_t np,
                     int64_t stride)
{
    const double eps = 1e-6;
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < np; i++)
        scale = fmax(scale, fabs(grad[i]));
    for (int64_t i = 0; i < np; i += stride) {
        double keep = p[i], lp, lm;
        p[i] = keep + eps;
        lp = ref_loss(x0, s, ndim, rows, n, W, bias, K, NULL, NULL, NULL);
        p[i] = keep - eps;
        lm = ref_loss(x0, s, ndim, rows, n, W, bias, K, NULL, NULL, NULL);
        p[i] = keep;
        worst = fmax(worst, fabs((lp - lm) / (2 * eps) - grad[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

static void run_reference(int video, clapp_sup_labels labels)
{
    const int32_t B = 4;
    const int64_t C = 3, T = 9, H = video ? 2 : 1, Wd = video ? 3 : 1, K = 5;
    const int64_t HW = H * Wd, D = C * HW;
    const int32_t lens[4] = {9, 6, 7, 0};
    int64_t shape[5] = {B, C, T, H, Wd};
    clapp_stream_info info = {video ? 5 : 3, {B, C, T, H, Wd, 0}, 100.0};
    trng r = {1234ull + (uint64_t)video * 17 + (uint64_t)labels};
    sblock sb;
    clapp_sup_params sp = {K, labels, 99};
    clapp_loss_supervised *L = NULL;
    const clapp_named_tensor *nt;
    int32_t nn;
    clapp_loss_stats st;
    clapp_tensor grad;
    rrow rows[64];
    int64_t n = 0, nx, erows, ecorrect;
    const int32_t *lab_of;
    double *xd, *Wd_, *bd, *dx, *dW, *db, lref, e[4], fd[3], efd;

    memset(&sb, 0, sizeof sb);
    if (!video)
        shape[3] = shape[4] = 1;
    assert_int_equal(clapp_tensor_alloc_shape(&sb.blk.x, video ? 5 : 3, shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&grad, video ? 5 : 3, shape), 0);
    nx = clapp_tensor_numel(&sb.blk.x);
    sb.blk.lanes = B;
    sb.blk.lane = sb.lane;
    sb.blk.rate = 100.0;
    sb.blk.label_rate = 100.0;   /* step t <-> labels[t] */
    for (int32_t b = 0; b < B; b++) {
        sb.lane[b].len = lens[b];
        sb.lane[b].seq_id = lens[b] ? b : -1;
        sb.lane[b].class_label = (int32_t)(b % 3 == 2 ? -1 : (b * 2) % K);   /* lane 2: no label */
        for (int t = 0; t < 12; t++)
            sb.labels[b][t] = (t % 4 == 3) ? -1 : (int32_t)((b + 2 * t) % K);   /* every 4th: none */
        sb.lane[b].labels = b == 1 ? NULL : sb.labels[b];   /* lane 1: no alignment */
        sb.lane[b].n_labels = 12;
    }
    for (int32_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++)
            for (int64_t t = 0; t < lens[b]; t++)
                sb.blk.x.data[feat_at(shape, video ? 5 : 3, b, d, t)] = (float)tnormal(&r);

    /* the rows the documentation promises */
    for (int32_t b = 0; b < B; b++) {
        if (!lens[b])
            continue;
        if (labels == CLAPP_SUP_CLASS) {
            if (sb.lane[b].class_label >= 0)
                rows[n++] = (rrow){b, sb.lane[b].class_label, 0, lens[b]};
            continue;
        }
        for (int64_t t = 0; t < lens[b] && sb.lane[b].labels; t++)
            if (sb.labels[b][t] >= 0)
                rows[n++] = (rrow){b, sb.labels[b][t], t, t + 1};
    }

    assert_int_equal(clapp_loss_supervised_create(&L, &sp, &info, NULL, "s"), 0);
    assert_int_equal(clapp_loss_supervised_tensors(L, &nt, &nn), 0);
    assert_int_equal(nn, 2);
    assert_string_equal(nt[0].name, "weight");
    assert_string_equal(nt[1].name, "bias");
    assert_int_equal(nt[0].value->shape[0], K);
    assert_int_equal(nt[0].value->shape[1], D);
    for (int64_t i = 0; i < K * D; i++)   /* larger than the init: a non-trivial softmax */
        nt[0].value->data[i] = (float)(0.7 * tnormal(&r));
    assert_int_equal(clapp_loss_supervised_compute(L, &sb.blk, &grad, &st), 0);
    clapp_loss_supervised_last(L, &erows, &ecorrect, &lab_of);
    assert_int_equal(st.pairs, n);
    assert_int_equal(erows, n);
    /* the labels used, step by step (frames) or lane by lane (class) */
    for (int32_t b = 0; b < B; b++) {
        if (labels == CLAPP_SUP_CLASS) {
            int32_t want = lens[b] ? sb.lane[b].class_label : -1;
            assert_int_equal(lab_of[b], want);
            continue;
        }
        for (int64_t t = 0; t < T; t++) {
            int32_t want = t < lens[b] && sb.lane[b].labels ? sb.labels[b][t] : -1;
            assert_int_equal(lab_of[b * T + t], want);
        }
    }

    xd = to_double(sb.blk.x.data, nx);
    Wd_ = to_double(nt[0].value->data, K * D);
    bd = to_double(nt[1].value->data, K);
    dx = calloc((size_t)nx, sizeof *dx);
    dW = calloc((size_t)(K * D), sizeof *dW);
    db = calloc((size_t)K, sizeof *db);
    lref = ref_loss(xd, shape, video ? 5 : 3, rows, n, Wd_, bd, K, dx, dW, db);
    e[0] = fabs(st.loss - lref) / lref;
    e[1] = rel_err(grad.data, dx, nx);
    e[2] = rel_err(nt[0].grad->data, dW, K * D);
    e[3] = rel_err(nt[1].grad->data, db, K);
    fd[0] = ref_fd(xd, shape, video ? 5 : 3, rows, n, Wd_, bd, K, xd, dx, nx, 3);
    fd[1] = ref_fd(xd, shape, video ? 5 : 3, rows, n, Wd_, bd, K, Wd_, dW, K * D, 2);
    fd[2] = ref_fd(xd, shape, video ? 5 : 3, rows, n, Wd_, bd, K, bd, db, K, 1);
    {
        /* the engine's own finite differences (float) on the input */
        float *g0 = malloc((size_t)nx * sizeof *g0);
        double worst = 0.0, scale = 0.0;
        memcpy(g0, grad.data, (size_t)nx * sizeof *g0);
        for (int64_t i = 0; i < nx; i++)
            scale = fmax(scale, fabs((double)g0[i]));
        for (int64_t i = 0; i < nx; i += 5) {
            float keep = sb.blk.x.data[i];
            double lp, lm;
            sb.blk.x.data[i] = keep + 1e-2f;
            assert_int_equal(clapp_loss_supervised_compute(L, &sb.blk, NULL, &st), 0);
            lp = st.loss;
            sb.blk.x.data[i] = keep - 1e-2f;
            assert_int_equal(clapp_loss_supervised_compute(L, &sb.blk, NULL, &st), 0);
            lm = st.loss;
            sb.blk.x.data[i] = keep;
            worst = fmax(worst, fabs((lp - lm) / 2e-2 - (double)g0[i]));
        }
        efd = worst / scale;
        free(g0);
    }
    /* no gradient at steps without a label (frames) or in lanes without one (class) */
    for (int32_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++)
            for (int64_t t = 0; t < T; t++) {
                int used = 0;
                for (int64_t k = 0; k < n; k++)
                    used |= rows[k].b == b && t >= rows[k].t0 && t < rows[k].t1;
                if (!used)
                    assert_true(grad.data[feat_at(shape, video ? 5 : 3, b, d, t)] == 0.0f);
            }
    printf("  %-5s %-6s rows %2lld loss %.9f ref %.9f (rel %.1e) | engine vs ref: dx %.1e dW %.1e "
           "db %.1e | ref FD: x %.1e W %.1e b %.1e | engine FD: x %.1e\n", video ? "video" : "audio",
           labels == CLAPP_SUP_FRAMES ? "frames" : "class", (long long)n, lref, lref, e[0], e[1],
           e[2], e[3], fd[0], fd[1], fd[2], efd);
    for (int i = 0; i < 4; i++)
        assert_true(e[i] <= 1e-5);
    for (int i = 0; i < 3; i++)
        assert_true(fd[i] <= 1e-6);
    assert_true(efd <= 1e-2);
    clapp_loss_supervised_destroy(L);
    free(xd);
    free(Wd_);
    free(bd);
    free(dx);
    free(dW);
    free(db);
    clapp_tensor_free(&grad);
    clapp_tensor_free(&sb.blk.x);
}

static void test_reference(void **state)
{
    (void)state;
    run_reference(0, CLAPP_SUP_FRAMES);
    run_reference(1, CLAPP_SUP_FRAMES);
    run_reference(0, CLAPP_SUP_CLASS);
    run_reference(1, CLAPP_SUP_CLASS);
}

/* ---- graphs ------------------------------------------------------------------ */

typedef struct grun {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    char                err[1024];
} grun;

static int grun_open(grun *r, const char *text, const clapp_stream_info *src, double lr)
{
    clapp_graph_params gp;
    memset(r, 0, sizeof *r);
    tu_host_init(&r->host, &r->log);
    assert_int_equal(clapp_registry_init_default(&r->reg, &r->host), 0);
    if (clapp_pipedesc_parse(&r->pd, text, "<test>", r->err, sizeof r->err) < 0 ||
        clapp_pipedesc_resolve(&r->pd, &r->reg, r->err, sizeof r->err) < 0)
        fail_msg("%s", r->err);
    clapp_graph_default_params(&gp);
    gp.seed = 11;
    gp.optim.lr = lr;
    return clapp_graph_create(&r->g, &r->pd, src, &gp, &r->host, r->err, sizeof r->err);
}

static void grun_close(grun *r)
{
    clapp_graph_destroy(&r->g);
    clapp_pipedesc_free(&r->pd);
    clapp_registry_free(&r->reg);
    tu_log_free(&r->log);
}

static int find_node(const grun *r, const char *name)
{
    for (int i = 0; i < r->g.n; i++)
        if (!strcmp(r->g.nodes[i].pe->name, name))
            return i;
    fail_msg("no element %s", name);
    return -1;
}

/* ---- 2. labels as the phoneme probe reads them ---------------------------------- */

static void test_labels_as_probe(void **state)
{
    (void)state;
    const int32_t B = 4;
    const int64_t T = 200;   /* input steps at 1000/s; conv stride 3: ~66 steps at 333.3/s */
    const clapp_stream_info src = {3, {B, 1, T, 0, 0, 0}, 1000.0};
    char *dir = tu_tmpdir("sup_labels"), *conf = tu_path(dir, "conf.tsv"), text[512];
    int32_t labels[4][64];
    int64_t in_shape[3] = {B, 1, T}, rows, correct, hist[6] = {0}, probe_hist[6] = {0}, frames = -1;
    int64_t total = 0;
    const int32_t *lab_of;
    clapp_block blk;
    clapp_lane lanes[4];
    trng r = {4242ull};
    grun g;
    const clapp_block *out;
    int s, c;
    char rep[1024];
    FILE *f;

    snprintf(text, sizeof text,
             "source ! conv1d name=c out=3 kernel=4 stride=3 ! supervised name=s classes=6 "
             "! probe_phoneme name=p classes=6 confusion_out=%s", conf);
    assert_int_equal(grun_open(&g, text, &src, 1e-3), 0);
    s = find_node(&g, "s");
    c = find_node(&g, "c");
    memset(&blk, 0, sizeof blk);
    memset(lanes, 0, sizeof lanes);
    assert_int_equal(clapp_tensor_alloc_shape(&blk.x, 3, in_shape), 0);
    for (int64_t i = 0; i < clapp_tensor_numel(&blk.x); i++)
        blk.x.data[i] = (float)tnormal(&r);
    blk.lanes = B;
    blk.lane = lanes;
    blk.rate = 1000.0;
    blk.label_rate = 70.0;   /* not a divisor of either rate */
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < 64; i++)
            labels[b][i] = (i % 5 == 4) ? -1 : (int32_t)((b + 7 * i) % 6);
        lanes[b].seq_id = b;
        lanes[b].flags = CLAPP_LANE_SEQ_START;
        lanes[b].len = (int32_t)T;
        lanes[b].class_label = -1;
        lanes[b].labels = labels[b];
    }
    lanes[0].label_pts = 0;
    lanes[0].n_labels = 64;
    lanes[1].labels = NULL;   /* no alignment */
    lanes[2].seq_id = -1;     /* idle */
    lanes[2].len = 0;
    lanes[3].n_labels = 6;    /* the labels end inside the first block */
    lanes[3].len = 150;
    /* two blocks: the second continues the sequences (the layer's pts > 0) and
     * lane 0's labels start at label_pts = 20 */
    for (int blkno = 0; blkno < 2; blkno++) {
        int64_t n = 0, To;
        if (blkno == 1) {
            for (int b = 0; b < B; b++) {
                lanes[b].flags = 0;
                lanes[b].pts += lanes[b].len;
            }
            lanes[0].label_pts = 20;
            lanes[0].n_labels = 20;
            lanes[0].len = 170;
        }
        assert_int_equal(clapp_graph_process(&g.g, &blk, g.err, sizeof g.err), 0);
        out = &g.g.nodes[c].out;
        To = out->x.shape[2];
        clapp_loss_supervised_last(node_loss_sup(&g.g.nodes[s]), &rows, &correct, &lab_of);
        /* the documented formula, at the layer's rate and pts */
        for (int b = 0; b < B; b++)
            for (int64_t t = 0; t < To; t++) {
                const clapp_lane *ln = &out->lane[b];
                int32_t want = -1;
                if (ln->seq_id >= 0 && t < ln->len && ln->labels) {
                    int64_t i = (int64_t)floor(((double)ln->pts + (double)t + 0.5) *
                                               out->label_rate / out->rate) - ln->label_pts;
                    if (i >= 0 && i < ln->n_labels)
                        want = ln->labels[i];
                }
                assert_int_equal(lab_of[b * To + t], want);
                if (want >= 0) {
                    n++;
                    hist[want]++;
                }
            }
        assert_int_equal(rows, n);
        total += n;
        printf("  block %d: layer rate %.2f/s, label_rate %.0f/s, lane pts %lld %lld %lld: %lld "
               "labelled steps of %lld valid\n", blkno, out->rate, out->label_rate,
               (long long)out->lane[0].pts, (long long)out->lane[1].pts,
               (long long)out->lane[3].pts, (long long)n,
               (long long)(out->lane[0].len + out->lane[1].len + out->lane[3].len));
        assert_true(n > 20);
    }
    /* the probe's view of the same block */
    assert_true(clapp_graph_report(&g.g, find_node(&g, "p"), rep, sizeof rep) >= 0);
    {
        const char *q = strstr(rep, "\"frames\":");
        assert_non_null(q);
        frames = strtoll(q + 9, NULL, 10);
    }
    assert_int_equal(clapp_graph_finish(&g.g, g.err, sizeof g.err), 0);
    f = fopen(conf, "r");
    assert_non_null(f);
    {
        char line[512];
        int row = 0;
        assert_non_null(fgets(line, sizeof line, f));   /* comment */
        while (row < 6 && fgets(line, sizeof line, f)) {
            char *p = line;
            for (int col = 0; col < 6; col++)
                probe_hist[row] += strtoll(p, &p, 10);
            row++;
        }
    }
    fclose(f);
    printf("  probe_phoneme frames %lld, supervised rows %lld; per label:", (long long)frames,
           (long long)total);
    for (int k = 0; k < 6; k++) {
        printf(" %lld/%lld", (long long)probe_hist[k], (long long)hist[k]);
        assert_int_equal(probe_hist[k], hist[k]);
    }
    printf("\n");
    assert_int_equal(frames, total);
    grun_close(&g);

    /* a label beyond classes= is refused, naming it */
    snprintf(text, sizeof text, "source ! conv1d name=c out=3 kernel=4 stride=3 "
                                "! supervised name=s classes=3");
    assert_int_equal(grun_open(&g, text, &src, 1e-3), 0);
    lanes[2] = lanes[3];
    assert_true(clapp_graph_process(&g.g, &blk, g.err, sizeof g.err) < 0);
    assert_true(tu_log_count(&g.log, "outside classes=3") >= 1);
    grun_close(&g);
    clapp_tensor_free(&blk.x);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

/* ---- 3. training, end to end, checkpoint and resume ---------------------------- */

/* Synthetic labelled audio at 8000/s, labels at 100/s: every 10 ms segment
 * is one of three tones (class = tone) with noise, drawn from (block, lane). */
static void make_block(clapp_block *blk, clapp_lane *lanes, int32_t (*labels)[32], int64_t k)
{
    const double f[3] = {250.0, 1000.0, 2600.0};
    const int32_t B = blk->lanes;
    const int64_t T = blk->x.shape[2];
    for (int b = 0; b < B; b++) {
        trng r = {0x9E3779B97F4A7C15ull * (uint64_t)(k * 8 + b + 1)};
        double phase = trand(&r) * 6.28;
        for (int i = 0; i < T / 80; i++)
            labels[b][i] = (int32_t)(trand(&r) * 3.0);
        for (int64_t t = 0; t < T; t++) {
            int32_t y = labels[b][t / 80];
            blk->x.data[b * T + t] =
                (float)(sin(phase + 6.283185307179586 * f[y] * (double)t / 8000.0) +
                        0.3 * tnormal(&r));
        }
        lanes[b].seq_id = k * 8 + b;
        lanes[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        lanes[b].len = (int32_t)T;
        lanes[b].pts = 0;
        lanes[b].class_label = -1;
        lanes[b].labels = labels[b];
        lanes[b].n_labels = (int32_t)(T / 80);
        lanes[b].label_pts = 0;
    }
}

typedef struct trainer {
    clapp_block blk;
    clapp_lane  lanes[4];
    int32_t     labels[4][32];
} trainer;

static void trainer_init(trainer *tr)
{
    int64_t shape[3] = {4, 1, 1600};
    memset(tr, 0, sizeof *tr);
    assert_int_equal(clapp_tensor_alloc_shape(&tr->blk.x, 3, shape), 0);
    tr->blk.lanes = 4;
    tr->blk.lane = tr->lanes;
    tr->blk.rate = 8000.0;
    tr->blk.label_rate = 100.0;
}

static void run_blocks(grun *g, trainer *tr, int64_t from, int64_t to, const char **sups, int nsup,
                       double *loss, double *acc)
{
    for (int j = 0; j < nsup; j++)
        loss[j] = acc[j] = 0.0;
    for (int64_t k = from; k < to; k++) {
        make_block(&tr->blk, tr->lanes, tr->labels, k);
        assert_int_equal(clapp_graph_process(&g->g, &tr->blk, g->err, sizeof g->err), 0);
        for (int j = 0; j < nsup; j++) {
            const clapp_node *nd = &g->g.nodes[find_node(g, sups[j])];
            int64_t rows, correct;
            clapp_loss_supervised_last(node_loss_sup(nd), &rows, &correct, NULL);
            assert_true(rows > 0);
            loss[j] += nd->last.loss / (double)(to - from);
            acc[j] += (double)correct / (double)rows / (double)(to - from);
        }
    }
}

static void test_trains_and_resumes(void **state)
{
    (void)state;
    static const char greedy[] =
        "source ! conv1d name=c1 out=16 kernel=16 stride=8 ! supervised name=s1 classes=3 "
        "! conv1d name=c2 out=16 kernel=4 stride=2 ! supervised name=s2 classes=3";
    static const char e2e[] =
        "source ! conv1d name=c1 out=16 kernel=16 stride=8 ! conv1d name=c2 out=16 kernel=4 "
        "stride=2 ! supervised name=s2 classes=3";
    const clapp_stream_info src = {3, {4, 1, 1600, 0, 0, 0}, 8000.0};
    const char *sups[2] = {"s1", "s2"};
    char *dir = tu_tmpdir("sup_train"), *ck = tu_path(dir, "ck.safetensors");
    clapp_ckpt_options opt = {1, 1};
    double l0[2], a0[2], l1[2], a1[2];
    trainer tr;
    grun g, h;

    trainer_init(&tr);
    /* greedy: each layer with its own classifier */
    assert_int_equal(grun_open(&g, greedy, &src, 3e-3), 0);
    run_blocks(&g, &tr, 0, 5, sups, 2, l0, a0);
    run_blocks(&g, &tr, 5, 60, sups, 2, l1, a1);
    run_blocks(&g, &tr, 60, 65, sups, 2, l1, a1);
    printf("  greedy: s1 loss %.3f -> %.3f, accuracy %.3f -> %.3f; s2 loss %.3f -> %.3f, "
           "accuracy %.3f -> %.3f (first / last 5 blocks)\n", l0[0], l1[0], a0[0], a1[0], l0[1],
           l1[1], a0[1], a1[1]);
    for (int j = 0; j < 2; j++) {
        assert_true(l1[j] < 0.7 * l0[j]);
        assert_true(a1[j] > a0[j] + 0.2);
    }
    grun_close(&g);

    /* end to end: the top classifier's gradient moves the first layer too */
    {
        float *w0;
        const clapp_named_tensor *t;
        int64_t n;
        double moved = 0.0;
        assert_int_equal(grun_open(&g, e2e, &src, 3e-3), 0);
        t = &g.g.nodes[find_node(&g, "c1")].tensors[0];
        n = clapp_tensor_numel(t->value);
        w0 = malloc((size_t)n * sizeof *w0);
        memcpy(w0, t->value->data, (size_t)n * sizeof *w0);
        run_blocks(&g, &tr, 0, 5, sups + 1, 1, l0, a0);
        run_blocks(&g, &tr, 5, 40, sups + 1, 1, l1, a1);
        for (int64_t i = 0; i < n; i++)
            moved = fmax(moved, fabs((double)t->value->data[i] - (double)w0[i]));
        printf("  end to end: loss %.3f -> %.3f, accuracy %.3f -> %.3f; c1.%s moved by up to %.3g\n",
               l0[0], l1[0], a0[0], a1[0], t->name, moved);
        assert_true(moved > 1e-3);
        assert_true(l1[0] < l0[0]);
        free(w0);
        grun_close(&g);
    }

    /* checkpoint at block 10, resume, 10 more: the tensors of an uninterrupted run */
    assert_int_equal(grun_open(&g, greedy, &src, 3e-3), 0);
    run_blocks(&g, &tr, 0, 20, sups, 2, l0, a0);
    assert_int_equal(grun_open(&h, greedy, &src, 3e-3), 0);
    run_blocks(&h, &tr, 0, 10, sups, 2, l1, a1);
    if (clapp_ckpt_save(&h.g, ck, &opt, h.err, sizeof h.err) < 0)
        fail_msg("%s", h.err);
    grun_close(&h);
    assert_int_equal(grun_open(&h, greedy, &src, 3e-3), 0);
    if (clapp_ckpt_load(&h.g, ck, &opt, h.err, sizeof h.err) < 0)
        fail_msg("%s", h.err);
    run_blocks(&h, &tr, 10, 20, sups, 2, l1, a1);
    {
        int checked = 0;
        for (int i = 1; i < g.g.n; i++)
            for (int32_t t = 0; t < g.g.nodes[i].n_tensors; t++) {
                const clapp_tensor *a = g.g.nodes[i].tensors[t].value;
                const clapp_tensor *b = h.g.nodes[i].tensors[t].value;
                assert_int_equal(clapp_tensor_numel(a), clapp_tensor_numel(b));
                assert_memory_equal(a->data, b->data,
                                    (size_t)clapp_tensor_numel(a) * sizeof(float));
                checked++;
            }
        printf("  resume at block 10 of 20: %d tensors bit-identical (s1.weight, s1.bias, ...)\n",
               checked);
    }
    {
        char err[256];
        char *meta = clapp_ckpt_read_meta(ck, "elements", err, sizeof err);
        assert_non_null(meta);
        assert_non_null(strstr(meta, "supervised"));
        free(meta);
    }
    grun_close(&g);
    grun_close(&h);
    clapp_tensor_free(&tr.blk.x);
    tu_rmtree(dir);
    free(ck);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_labels_as_probe),
        cmocka_unit_test(test_trains_and_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
