/* Parsing the options of clapp run, train and eval. */
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The optimizer and diagnostics options of train: name, value. Returns
 * CLI_OK, or CLI_USAGE after naming the option and the allowed range. */
static int parse_optim_option(cli_options *o, const char *a, const char *v)
{
    char *end = NULL;
    double x;
    if (!strcmp(a, "--warmup") || !strcmp(a, "--diag-every")) {
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || n < 0) {
            fprintf(stderr, "clapp: error: %s %s: expected a number of blocks >= 0 (0: off)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--warmup") ? &o->warmup : &o->diag_every) = n;
        return CLI_OK;
    }
    x = strtod(v, &end);
    if (!*v || *end) {
        fprintf(stderr, "clapp: error: %s %s: expected a number\n", a, v);
        return CLI_USAGE;
    }
    if (!strcmp(a, "--adam-eps")) {
        if (!(x > 0)) {
            fprintf(stderr, "clapp: error: --adam-eps %s: expected a number > 0\n", v);
            return CLI_USAGE;
        }
        o->adam_eps = x;
    } else if (!strcmp(a, "--adam-beta1") || !strcmp(a, "--adam-beta2")) {
        if (!(x >= 0 && x < 1)) {
            fprintf(stderr, "clapp: error: %s %s: expected a number in [0, 1)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--adam-beta1") ? &o->adam_beta1 : &o->adam_beta2) = x;
    } else {
        if (!(x >= 0)) {
            fprintf(stderr, "clapp: error: %s %s: expected a number >= 0 (0: off)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--clip") ? &o->clip : &o->weight_decay) = x;
    }
    return CLI_OK;
}

int cli_options_parse(cli_options *o, int argc, char **argv, int *help)
{
    memset(o, 0, sizeof *o);
    o->epochs = 1;
    o->seed = 1;
    o->verbosity = 1;
    o->lr = -1;
    o->adam_eps = 1e-8;    /* PyTorch's Adam defaults, the paper's setting */
    o->adam_beta1 = 0.9;
    o->adam_beta2 = 0.999;
    o->diag_every = 16;
    *help = 0;
    o->sets = calloc((size_t)argc + 1, sizeof *o->sets);
    o->probes = calloc((size_t)argc + 1, sizeof *o->probes);
    if (!o->sets || !o->probes)
        return CLI_FAILED;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = 1;
            return CLI_OK;
        } else if (!strcmp(a, "--dump-graph")) {
            o->dump_graph = 1;
        } else if (!strcmp(a, "--resume")) {
            o->resume = 1;
        } else if (!strcmp(a, "--strict")) {
            o->strict = 1;
        } else if (!strcmp(a, "--random-init")) {
            o->random_init = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            o->verbosity = 0;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            o->verbosity = 2;
        } else if (!strcmp(a, "--warmup") || !strcmp(a, "--diag-every") || !strcmp(a, "--clip") ||
                   !strcmp(a, "--adam-eps") || !strcmp(a, "--adam-beta1") ||
                   !strcmp(a, "--adam-beta2") || !strcmp(a, "--weight-decay")) {
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            if (parse_optim_option(o, a, argv[++i]) != CLI_OK)
                return CLI_USAGE;
        } else if (!strcmp(a, "--data") || !strcmp(a, "--set") || !strcmp(a, "--epochs") ||
                   !strcmp(a, "--seed") || !strcmp(a, "--lr") || !strcmp(a, "--metrics") ||
                   !strcmp(a, "--checkpoint") || !strcmp(a, "--checkpoint-every") ||
                   !strcmp(a, "--train") || !strcmp(a, "--test") || !strcmp(a, "--json") ||
                   !strcmp(a, "--probe") || !strcmp(a, "--val") || !strcmp(a, "--probe-seeds") ||
                   !strcmp(a, "--probe-lrs") || !strcmp(a, "--budget-minutes") ||
                   !strcmp(a, "--snapshots")) {
            char *end = NULL;
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            i++;
            if (!strcmp(a, "--data")) {
                o->data = v;
            } else if (!strcmp(a, "--metrics")) {
                o->metrics = v;
            } else if (!strcmp(a, "--checkpoint")) {
                o->checkpoint = v;
            } else if (!strcmp(a, "--probe")) {
                o->probes[o->n_probes++] = (char *)v;
            } else if (!strcmp(a, "--train")) {
                o->train = v;
            } else if (!strcmp(a, "--test")) {
                o->test = v;
            } else if (!strcmp(a, "--val")) {
                o->val = v;
            } else if (!strcmp(a, "--probe-lrs")) {
                o->probe_lrs = v;
            } else if (!strcmp(a, "--budget-minutes")) {
                double m = strtod(v, &end);
                if (*end || !(m > 0) || m > 1e7) {
                    fprintf(stderr, "clapp: error: --budget-minutes %s: expected a number of minutes > 0\n", v);
                    return CLI_USAGE;
                }
                o->budget_s = 60 * m;
            } else if (!strcmp(a, "--snapshots")) {
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 1000) {
                    fprintf(stderr, "clapp: error: --snapshots %s: expected an integer in [1, 1000]\n", v);
                    return CLI_USAGE;
                }
                o->snapshots = (int)n;
            } else if (!strcmp(a, "--probe-seeds")) {
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 64) {
                    fprintf(stderr, "clapp: error: --probe-seeds %s: expected an integer in [1, 64]\n", v);
                    return CLI_USAGE;
                }
                o->probe_seeds = (int)n;
            } else if (!strcmp(a, "--json")) {
                o->json = v;
            } else if (!strcmp(a, "--checkpoint-every")) {
                long long e = strtoll(v, &end, 10);
                if (*end || e < 1) {
                    fprintf(stderr, "clapp: error: --checkpoint-every %s: expected a number of blocks >= 1\n", v);
                    return CLI_USAGE;
                }
                o->checkpoint_every = e;
            } else if (!strcmp(a, "--set")) {
                o->sets[o->n_sets++] = (char *)v;
            } else if (!strcmp(a, "--epochs")) {
                long e = strtol(v, &end, 10);
                if (*end || e < 1 || e > 1000000) {
                    fprintf(stderr, "clapp: error: --epochs %s: expected an integer in [1, 1000000]\n", v);
                    return CLI_USAGE;
                }
                o->epochs = (int)e;
                o->epochs_given = 1;
            } else if (!strcmp(a, "--seed")) {
                unsigned long long s = strtoull(v, &end, 10);
                if (*end || !*v) {
                    fprintf(stderr, "clapp: error: --seed %s: expected a non-negative integer\n", v);
                    return CLI_USAGE;
                }
                o->seed = s;
            } else {
                double lr = strtod(v, &end);
                if (*end || !(lr >= 0)) {
                    fprintf(stderr, "clapp: error: --lr %s: expected a number >= 0\n", v);
                    return CLI_USAGE;
                }
                o->lr = lr;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "clapp: error: unknown option '%s'\n", a);
            return CLI_USAGE;
        } else if (!o->pipe) {
            o->pipe = a;
        } else {
            fprintf(stderr, "clapp: error: unexpected argument '%s'\n", a);
            return CLI_USAGE;
        }
    }
    if (!o->pipe) {
        fprintf(stderr, "clapp: error: no pipeline file given\n");
        return CLI_USAGE;
    }
    return CLI_OK;
}

void cli_options_free(cli_options *o)
{
    free(o->sets);
    free(o->probes);
    o->sets = NULL;
    o->probes = NULL;
}
