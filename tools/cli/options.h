/* The options of clapp run, train and eval (no header of core/ here). */
#ifndef CLAPP_CLI_OPTIONS_H
#define CLAPP_CLI_OPTIONS_H

#include <stdint.h>

typedef struct cli_options {
    const char *pipe;
    const char *data;
    char      **sets;
    int         n_sets;
    int         dump_graph;
    int         epochs;
    uint64_t    seed;
    int         verbosity;   /* 0 errors, 1 warnings, 2 info */
    double      lr;
    double      adam_eps, adam_beta1, adam_beta2; /* train: Adam's settings */
    long long   warmup;      /* train: lr ramps from 0 over this many optimizer steps (0: off) */
    double      clip;        /* train: per-element gradient L2 norm clip (0: off) */
    double      weight_decay; /* train: decoupled weight decay, AdamW's (0: off) */
    long long   diag_every;  /* train: per-layer diagnostics every this many blocks (0: off) */
    const char *metrics;     /* train: JSONL file ("-" or NULL: standard output) */
    const char *checkpoint;  /* train: write here; eval/extract: read from here */
    long long   checkpoint_every; /* train: also every this many blocks (0: only at the end) */
    int         resume;      /* train: continue from --checkpoint */
    int         strict;      /* damaged input fails the file (the source's strict=true) */
    const char *train;       /* eval: probe training manifest */
    const char *test;        /* eval: probe test manifest */
    const char *val;         /* eval: validation manifest (chooses the probe learning rate) */
    int         probe_seeds; /* eval: probe seeds per probe (0: the default) */
    const char *probe_lrs;   /* eval: learning rates to choose from, "a,b,c" */
    int         epochs_given; /* --epochs was on the command line */
    double      budget_s;    /* train: stop after this many seconds of training (0: no limit) */
    int         snapshots;   /* train: checkpoints at k/N of the budget, PATH.snapK.safetensors */
    int         random_init; /* eval, extract: no checkpoint, the random-init encoder */
    int         shuffle;     /* eval: shuffle the data every epoch, whatever the source says */
    const char *json;        /* eval: write the report here too */
    char      **probes;      /* eval: attach a probe after these elements ("NAME" or "NAME:TYPE") */
    int         n_probes;
} cli_options;

/* Parse the options shared by run, train and eval. Returns CLI_OK, or
 * CLI_USAGE after printing the problem; *help is set for --help. o->sets
 * and o->probes are allocated: free them with cli_options_free. */
int  cli_options_parse(cli_options *o, int argc, char **argv, int *help);
void cli_options_free(cli_options *o);

#endif
