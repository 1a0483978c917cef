/* clapp eval PIPE --checkpoint C --train M [--val M] --test M: freeze the
 * encoder, record once what every probe sees on each manifest (probe_cache.h),
 * then train each probe on the recorded training features, for several probe
 * seeds, at the learning rate that does best on the validation manifest, and
 * measure it on the test manifest. Reports mean and standard deviation over
 * the seeds, the majority-class rate, and the choice that was made. On the
 * host API alone: one pipeline per manifest, probe instances made from the
 * probe element's descriptor and values. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/clapp.h"
#include "probe_cache.h"
#include "stream.h"

#define EVAL_MAX_SEEDS 64
#define EVAL_MAX_LRS 16
#define EVAL_DEFAULT_LRS "3e-3,1e-2,3e-2,1e-1"
#define EVAL_DEFAULT_EPOCHS 10
#define EVAL_NO_CLASSES 65536   /* label range when a probe has no classes= */

static void eval_usage(void)
{
    printf("usage: clapp eval PIPE (--checkpoint C | --random-init) --train MANIFEST [--val MANIFEST]\n"
           "                  --test MANIFEST [--probe ELEMENT[:TYPE]]... [--epochs N] [--probe-seeds S]\n"
           "                  [--probe-lrs LR,LR,...] [--seed S] [--json FILE] [--set NAME.KEY=VALUE]... [--strict]\n"
           "                  [-q|-v]\n"
           "Loads the encoder from the checkpoint (or keeps its seeded random initialisation with\n"
           "--random-init) and freezes it. One pass over each manifest records what every probe of the\n"
           "pipeline sees; each probe is then trained on the recorded training features for N epochs\n"
           "(default %d; chunks shuffled every epoch; a probe with an anneal_blocks parameter gets its\n"
           "learning rate lowered to 0 over them) and measured on the test manifest.\n"
           "With --val, the probe learning rate (probe_lr) is chosen among --probe-lrs (default %s)\n"
           "by accuracy on the validation manifest (probe seed 0), never on the test manifest; without\n"
           "it, the pipeline's probe_lr is used. Then S probe seeds (default 3) are trained at that\n"
           "rate and the test accuracy is reported as mean and standard deviation over them, with the\n"
           "majority-class rate (always predicting the training set's most frequent class).\n"
           "--probe attaches a probe (default probe_phoneme) to the output of ELEMENT, named\n"
           "probe_ELEMENT; probes already in the pipeline are measured too.\n"
           "Prints a table, then the report as one JSON line (also written to --json FILE).\n"
           "Damaged input and --strict as for 'clapp run'.\n",
           EVAL_DEFAULT_EPOCHS, EVAL_DEFAULT_LRS);
}

/* What eval knows of one probe. */
typedef struct eval_probe {
    const char      *name, *element;
    const clapp_plugin_desc *desc;        /* the probe element's (owned by the first pipeline) */
    const clapp_param_value *values;      /* its resolved values */
    cli_cache_form   form;                /* frames (frame labels in the training data) or clip means */
    int32_t          classes;
    int              has_lr;              /* the probe has a probe_lr parameter */
    cli_probe_cache  cache[3];            /* train, val, test */
    double           lr;                  /* the rate used for the seeds */
    int              n_grid;
    double           grid_acc[EVAL_MAX_LRS];
    double           acc[EVAL_MAX_SEEDS], val_acc[EVAL_MAX_SEEDS];
    double           majority;
    int64_t          test_items, train_items;
    char            *report;              /* the last seed's test report */
} eval_probe;

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_TEST = 2 };

static int parse_lrs(const char *text, double *lrs)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0) || !isfinite(v) || n == EVAL_MAX_LRS || (*end && *end != ',')) {
            fprintf(stderr, "clapp: error: --probe-lrs %s: expected up to %d positive numbers separated "
                            "by commas\n", text, EVAL_MAX_LRS);
            return -1;
        }
        lrs[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        fprintf(stderr, "clapp: error: --probe-lrs is empty\n");
    return n ? n : -1;
}

/* Probe seed k of element `name`: a function of --seed, the name and k only. */
static uint64_t probe_seed(uint64_t seed, const char *name, int k)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001B3ull;
    return cli_mix64(cli_mix64(seed ^ h) + (uint64_t)k);
}

/* Record what every probe sees on one manifest (whole files in manifest
 * order, probes frozen) through pipeline p (opened on it here unless
 * `opened`), with the checkpoint's weights. */
static int eval_capture_opened(clapp_pipeline *p, const cli_options *o, const char *data, eval_probe *pr,
                               int n_pr, int split, int opened)
{
    clapp_run_info ri;
    int rc = CLAPP_OK;

    if ((!opened && (rc = clapp_pipeline_open_files(p, data)) < 0) ||
        (o->checkpoint && (rc = clapp_pipeline_load(p, o->checkpoint)) < 0)) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
        return rc == CLAPP_E_NOMEM ? CLI_FAILED : CLI_USAGE;
    }
    for (int k = 0; k < n_pr; k++) {
        clapp_stream_info si;
        if (clapp_pipeline_stream(p, pr[k].name, &si) < 0 ||
            cli_probe_cache_init(&pr[k].cache[split], &si, pr[k].form) < 0) {
            fprintf(stderr, "clapp: error: out of memory\n");
            return CLI_FAILED;
        }
    }
    while ((rc = clapp_pipeline_step(p)) == 1)
        for (int k = 0; k < n_pr; k++) {
            const clapp_block *blk;
            if (clapp_pipeline_output(p, pr[k].name, &blk) < 0 || cli_probe_cache_capture(&pr[k].cache[split], blk) < 0) {
                fprintf(stderr, "clapp: error: out of memory recording the features of %s\n", pr[k].name);
                return CLI_FAILED;
            }
        }
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s: %s\n", data, clapp_pipeline_error(p));
        return CLI_FAILED;
    }
    for (int k = 0; k < n_pr; k++)
        cli_probe_cache_close(&pr[k].cache[split]);
    clapp_pipeline_run_info(p, &ri);
    if (ri.files_failed > 0) {
        fprintf(stderr, "clapp: error: %s: %d file(s) could not be read (see above)\n", data, ri.files_failed);
        return CLI_FAILED;
    }
    return CLI_OK;
}

/* A pipeline for the next manifest, whose class ids continue those of `prev`. */
static int eval_next_pipeline(clapp_pipeline **p, const cli_options *o, const clapp_pipeline *prev)
{
    int status = cli_pipeline_create(p, o, 0, NULL), n = 0;
    const char *name;
    if (status != CLI_OK)
        return status;
    clapp_pipeline_class_count(prev, &n);
    for (int i = 0; i < n; i++)
        if (clapp_pipeline_class_name(prev, i, &name) < 0 || clapp_pipeline_add_class(*p, name) < 0) {
            fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(*p));
            return CLI_FAILED;
        }
    return CLI_OK;
}

/* The "accuracy" of a report, or NAN. */
static double report_accuracy(const char *report)
{
    cJSON *j = cJSON_Parse(report);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "accuracy");
    double v = cJSON_IsNumber(a) ? a->valuedouble : NAN;
    cJSON_Delete(j);
    return v;
}

/* Measure a trained, frozen probe on one cache: accuracy, and the report if asked. */
static double probe_score(const clapp_plugin_desc *desc, void *inst, const cli_probe_cache *c, char *report,
                          size_t cap)
{
    char buf[8192];
    if (desc->reset(inst, -1) < 0 || cli_probe_cache_replay(c, desc, inst, 0) < 0 ||
        !desc->report || desc->report(inst, buf, sizeof buf) < 0)
        return NAN;
    if (report)
        snprintf(report, cap, "%s", buf);
    return report_accuracy(buf);
}

/* Train one probe instance (seed k, learning rate lr) on the training cache
 * and score it on val and test (either may be NULL). Returns CLI_OK. */
static int probe_run(const clapp_host *host, const cli_options *o, eval_probe *pr, int k, double lr,
                     double *val_acc, double *test_acc, char **report)
{
    const clapp_plugin_desc *desc = pr->desc;
    clapp_param_value *values = NULL;
    clapp_create_info ci;
    void *inst = NULL;
    char buf[8192];
    int status = CLI_FAILED;

    values = malloc((size_t)desc->n_params * sizeof *values);
    if (!values)
        goto out;
    memcpy(values, pr->values, (size_t)desc->n_params * sizeof *values);
    for (int32_t i = 0; i < desc->n_params; i++)
        if (values[i].name && !strcmp(values[i].name, "probe_lr")) {
            values[i].f = lr;
        } else if (values[i].name && !strcmp(values[i].name, "anneal_blocks")) {
            /* the learning rate falls to 0 over the whole training */
            values[i].i = (int64_t)o->epochs * cli_probe_cache_blocks(&pr->cache[SPLIT_TRAIN]);
            values[i].f = (double)values[i].i;
        }
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = host;
    ci.instance_name = pr->name;
    ci.values = values;
    ci.n_values = desc->n_params;
    ci.seed = probe_seed(o->seed, pr->name, k);
    if (desc->create(&ci, &inst) < 0 || desc->configure(inst, &pr->cache[SPLIT_TRAIN].info, NULL) < 0 ||
        (desc->set_mode && desc->set_mode(inst, CLAPP_MODE_LEARN) < 0)) {
        fprintf(stderr, "clapp: error: %s: cannot set up a probe instance (see above)\n", pr->name);
        goto out;
    }
    for (int e = 0; e < o->epochs; e++)
        if (cli_probe_cache_replay(&pr->cache[SPLIT_TRAIN], desc, inst,
                                   cli_mix64(ci.seed + 0x5851F42D4C957F2Dull * (uint64_t)(e + 1))) < 0) {
            fprintf(stderr, "clapp: error: %s: training failed (see above)\n", pr->name);
            goto out;
        }
    if (desc->set_mode && desc->set_mode(inst, CLAPP_MODE_FROZEN) < 0)
        goto out;
    if (val_acc)
        *val_acc = probe_score(desc, inst, &pr->cache[SPLIT_VAL], NULL, 0);
    if (test_acc) {
        *test_acc = probe_score(desc, inst, &pr->cache[SPLIT_TEST], buf, sizeof buf);
        if (desc->finish && desc->finish(inst) < 0)
            goto out;
        if (report) {
            free(*report);
            *report = strdup(buf);
        }
    }
    status = CLI_OK;
out:
    if (inst)
        desc->destroy(inst);
    free(values);
    return status;
}

static void mean_sd(const double *v, int n, double *mean, double *sd)
{
    double m = 0, q = 0;
    for (int i = 0; i < n; i++)
        m += v[i];
    m /= n;
    for (int i = 0; i < n; i++)
        q += (v[i] - m) * (v[i] - m);
    *mean = m;
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;   /* sample standard deviation */
}

/* Majority-class rate: accuracy on test of always answering the most
 * frequent class of the training cache. */
static void probe_majority(eval_probe *pr)
{
    int64_t *train = calloc((size_t)pr->classes, sizeof *train);
    int64_t *test = calloc((size_t)pr->classes, sizeof *test);
    int32_t best = 0;
    pr->majority = NAN;
    if (train && test) {
        pr->train_items = cli_probe_cache_count(&pr->cache[SPLIT_TRAIN], pr->classes, train);
        pr->test_items = cli_probe_cache_count(&pr->cache[SPLIT_TEST], pr->classes, test);
        for (int32_t c = 1; c < pr->classes; c++)
            if (train[c] > train[best])
                best = c;
        if (pr->test_items > 0)
            pr->majority = (double)test[best] / (double)pr->test_items;
    }
    free(train);
    free(test);
}

static void json_number(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fprintf(f, "null");
}

static void eval_write_json(FILE *f, const cli_options *o, const eval_probe *pr, int n_pr, int seeds,
                            const double *lrs, int n_lrs)
{
    fprintf(f, "{\"pipeline\":\"%s\",\"checkpoint\":", o->pipe);
    if (o->checkpoint)
        fprintf(f, "\"%s\"", o->checkpoint);
    else
        fprintf(f, "null");
    fprintf(f, ",\"random_init\":%s,\"train\":\"%s\",\"val\":", o->random_init ? "true" : "false", o->train);
    if (o->val)
        fprintf(f, "\"%s\"", o->val);
    else
        fprintf(f, "null");
    fprintf(f, ",\"test\":\"%s\",\"epochs\":%d,\"probe_seeds\":%d,\"seed\":%llu,\"probes\":{", o->test,
            o->epochs, seeds, (unsigned long long)o->seed);
    for (int k = 0; k < n_pr; k++) {
        const eval_probe *p = &pr[k];
        double m, sd;
        mean_sd(p->acc, seeds, &m, &sd);
        fprintf(f, "%s\"%s\":{\"element\":\"%s\",\"accuracy\":", k ? "," : "", p->name, p->element);
        json_number(f, m);
        fprintf(f, ",\"sd\":");
        json_number(f, sd);
        fprintf(f, ",\"seeds\":[");
        for (int i = 0; i < seeds; i++) {
            fprintf(f, i ? "," : "");
            json_number(f, p->acc[i]);
        }
        fprintf(f, "],\"val_accuracy\":");
        if (o->val) {
            mean_sd(p->val_acc, seeds, &m, &sd);
            json_number(f, m);
        } else {
            fprintf(f, "null");
        }
        fprintf(f, ",\"majority\":");
        json_number(f, p->majority);
        fprintf(f, ",\"test_items\":%lld,\"train_items\":%lld,\"probe_lr\":", (long long)p->test_items,
                (long long)p->train_items);
        json_number(f, p->lr);
        fprintf(f, ",\"selection\":");
        if (p->n_grid > 0) {
            fprintf(f, "{\"on\":\"val\",\"probe_seed\":0,\"grid\":[");
            for (int i = 0; i < n_lrs; i++) {
                fprintf(f, "%s{\"probe_lr\":", i ? "," : "");
                json_number(f, lrs[i]);
                fprintf(f, ",\"val_accuracy\":");
                json_number(f, p->grid_acc[i]);
                fprintf(f, "}");
            }
            fprintf(f, "]}");
        } else {
            fprintf(f, "null");
        }
        fprintf(f, ",\"report\":%s}", p->report ? p->report : "null");
    }
    fprintf(f, "}}\n");
}

int cli_eval(int argc, char **argv)
{
    cli_options o;
    clapp_pipeline *first = NULL, *prev = NULL, *cur = NULL;
    clapp_host host;
    clapp_run_info ri;
    eval_probe *pr = NULL;
    int help = 0, status, n_pr = 0, n_lrs = 0, seeds, n = 0;
    double lrs[EVAL_MAX_LRS];
    FILE *json = NULL;
    cli_cache_form form = CLI_CACHE_MEAN;

    status = cli_options_parse(&o, argc, argv, &help);
    if (status != CLI_OK || help) {
        if (help)
            eval_usage();
        goto done;
    }
    if (!o.train || !o.test || (!o.checkpoint && !o.random_init) || (o.checkpoint && o.random_init)) {
        fprintf(stderr, "clapp: error: eval needs --train and --test manifests and exactly one of "
                        "--checkpoint or --random-init\n");
        status = CLI_USAGE;
        goto done;
    }
    if (!o.epochs_given)
        o.epochs = EVAL_DEFAULT_EPOCHS;
    seeds = o.probe_seeds > 0 ? o.probe_seeds : 3;
    if (seeds > EVAL_MAX_SEEDS) {
        fprintf(stderr, "clapp: error: --probe-seeds %d: at most %d\n", seeds, EVAL_MAX_SEEDS);
        status = CLI_USAGE;
        goto done;
    }
    n_lrs = parse_lrs(o.probe_lrs ? o.probe_lrs : EVAL_DEFAULT_LRS, lrs);
    if (n_lrs < 0) {
        status = CLI_USAGE;
        goto done;
    }
    cli_host_init(&host, o.verbosity);
    /* The first pipeline reads the training manifest; its probe elements give
     * the descriptors and values of the probe instances trained below. */
    if ((status = cli_pipeline_create(&first, &o, 0, NULL)) != CLI_OK)
        goto done;
    if (clapp_pipeline_element_count(first, &n) < 0 || !(pr = calloc((size_t)n + 1, sizeof *pr))) {
        status = CLI_FAILED;
        goto done;
    }
    for (int i = 1, last_layer = -1; i < n; i++) {
        const char *name, *producer = "source";
        int kind;
        const clapp_plugin_desc *d;
        const clapp_param_value *values, *v;
        eval_probe *p = &pr[n_pr];
        if (clapp_pipeline_element(first, i, &name, NULL, &kind) < 0 ||
            clapp_pipeline_element_values(first, name, &d, &values) < 0) {
            status = CLI_FAILED;
            goto done;
        }
        if (kind == CLAPP_KIND_LAYER)
            last_layer = i;
        if (kind != CLAPP_KIND_SINK || !d->report)
            continue;
        if (last_layer > 0)
            clapp_pipeline_element(first, last_layer, &producer, NULL, NULL);
        p->name = name;
        p->element = producer;
        p->desc = d;
        p->values = values;
        v = clapp_param_find(values, d->n_params, "classes");
        p->classes = v ? (int32_t)v->i : EVAL_NO_CLASSES;
        v = clapp_param_find(values, d->n_params, "probe_lr");
        p->has_lr = v != NULL;
        p->lr = v ? v->f : NAN;
        n_pr++;
    }
    if (!n_pr) {
        fprintf(stderr, "clapp: error: the pipeline has no probe that reports anything (add --probe ELEMENT)\n");
        status = CLI_USAGE;
        goto done;
    }
    /* Frame labels in the training manifest: frame probes; otherwise clip probes. */
    if (clapp_pipeline_open_files(first, o.train) < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(first));
        status = CLI_USAGE;
        goto done;
    }
    clapp_pipeline_run_info(first, &ri);
    if (ri.aligned_files > 0)
        form = CLI_CACHE_FRAMES;
    for (int k = 0; k < n_pr; k++)
        pr[k].form = form;
    /* opened above: eval_capture loads the weights and records */
    {
        const char *data[3] = {o.train, o.val, o.test};
        for (int split = 0; split < 3 && status == CLI_OK; split++) {
            if (!data[split])
                continue;
            if (split == 0) {
                cur = first;
            } else if ((status = eval_next_pipeline(&cur, &o, prev)) != CLI_OK) {
                break;
            }
            status = eval_capture_opened(cur, &o, data[split], pr, n_pr, split, split == 0);
            if (prev && prev != first)
                clapp_pipeline_destroy(prev);
            prev = cur;
            cur = NULL;
        }
    }
    for (int k = 0; k < n_pr && status == CLI_OK; k++) {
        eval_probe *p = &pr[k];
        probe_majority(p);
        if (o.val && p->has_lr) {
            int best = 0;
            for (int i = 0; i < n_lrs && status == CLI_OK; i++) {
                status = probe_run(&host, &o, p, 0, lrs[i], &p->grid_acc[i], NULL, NULL);
                if (o.verbosity > 0)
                    fprintf(stderr, "clapp: %s: probe_lr %g: validation accuracy %.4f\n", p->name, lrs[i],
                            p->grid_acc[i]);
                if (p->grid_acc[i] > p->grid_acc[best])
                    best = i;
            }
            p->n_grid = n_lrs;
            p->lr = lrs[best];
        }
        for (int i = 0; i < seeds && status == CLI_OK; i++)
            status = probe_run(&host, &o, p, i, p->lr, o.val ? &p->val_acc[i] : NULL, &p->acc[i], &p->report);
    }
    if (status != CLI_OK)
        goto done;

    printf("%-20s %-12s %-18s %-9s %-9s %s\n", "probe", "element", "test accuracy", "majority", "probe_lr",
           "items");
    for (int k = 0; k < n_pr; k++) {
        double m, sd;
        char acc[64];
        mean_sd(pr[k].acc, seeds, &m, &sd);
        snprintf(acc, sizeof acc, "%.2f%% +- %.2f", 100 * m, 100 * sd);
        printf("%-20s %-12s %-18s %-9.2f %-9g %lld\n", pr[k].name, pr[k].element, acc, 100 * pr[k].majority,
               pr[k].lr, (long long)pr[k].test_items);
    }
    if (o.json && !(json = fopen(o.json, "w"))) {
        perror(o.json);
        status = CLI_FAILED;
        goto done;
    }
    eval_write_json(stdout, &o, pr, n_pr, seeds, lrs, n_lrs);
    if (json)
        eval_write_json(json, &o, pr, n_pr, seeds, lrs, n_lrs);
    if (!o.val)
        fprintf(stderr, "clapp: warning: no --val manifest: probe_lr was not chosen, the pipeline's value "
                        "was used\n");
done:
    if (json && fclose(json) != 0) {
        perror(o.json);
        status = CLI_FAILED;
    }
    if (pr)
        for (int k = 0; k < n_pr; k++) {
            for (int c = 0; c < 3; c++)
                cli_probe_cache_free(&pr[k].cache[c]);
            free(pr[k].report);
        }
    free(pr);
    if (cur && cur != first)
        clapp_pipeline_destroy(cur);
    if (prev && prev != first)
        clapp_pipeline_destroy(prev);
    clapp_pipeline_destroy(first);
    cli_options_free(&o);
    return status;
}
