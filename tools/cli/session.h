/* A run of a pipeline over a manifest: registry, pipeline, manifest, source
 * and graph set up together, torn down together. Shared by run and train. */
#ifndef CLAPP_CLI_SESSION_H
#define CLAPP_CLI_SESSION_H

#include "checkpoint.h"
#include "cli.h"
#include "cli_core.h"
#include "graph.h"
#include "manifest.h"
#include "source.h"

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

typedef struct cli_session {
    clapp_host          host;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_manifest      manifest;
    clapp_labelset      labels;       /* phones of .phn alignments: the CMU-41 set */
    clapp_labelset      classes;      /* class names of the label column, in order of first appearance,
                                         shared by every manifest of the session (eval: train and test) */
    clapp_source       *src;
    clapp_graph         graph;
    int                 have_graph;
    FILE               *metrics;      /* JSONL per block when learning, or NULL */
    int                 progress;     /* human progress line on standard error */
    int64_t             skip_blocks;  /* resume: source blocks to decode and discard first (the
                                         checkpoint's block count), so the run continues exactly
                                         where the interrupted one stopped */
} cli_session;

/* Parse the options shared by run and train. Returns CLI_OK, or CLI_USAGE
 * after printing the problem; *help is set for --help. */
int  cli_options_parse(cli_options *o, int argc, char **argv, int *help);
/* Set everything up (learn: 1 trains). Prints the error and returns the exit status on failure. */
int  cli_session_open(cli_session *s, const cli_options *o, int learn);
/* Replace the data (manifest and source) of an open session, keeping the
 * graph: epochs passes, force_stream reads whole files whatever the source's mode. */
int  cli_session_use_data(cli_session *s, const cli_options *o, const char *data, int epochs,
                          int force_stream);
/* Stream every block through the graph. Returns the exit status. */
int  cli_session_run(cli_session *s, const cli_options *o);
/* Write the graph to o->checkpoint (with the optimizer state). */
int  cli_session_save(cli_session *s, const cli_options *o);
/* Load a checkpoint into the graph; prints the error. */
int  cli_session_load(cli_session *s, const char *path, int with_optimizer);
void cli_session_close(cli_session *s);

#endif
