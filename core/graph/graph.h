/* clapp core — the graph runtime: a resolved pipeline made into live
 * elements, driven block by block.
 *
 * The pipeline is a chain: source ! e1 ! e2 ! ... Every element's output
 * feeds the next one. Layers produce a new stream; loss elements and sinks
 * pass their input through unchanged.
 *
 * Learning (clapp_graph_params.learn): for each block, every element runs
 * forward in order. When a loss element is reached it computes its gradient
 * with respect to its module's output (and, with target=, the target
 * element's output), and the gradient flows back through the module's layers
 * only: a module is the run of layers between two loss elements, so nothing
 * crosses a loss element (GIM). After the last element, the optimizer steps
 * every learning tensor once. Frozen (learn = 0): loss elements are skipped.
 *
 * Direct feedback (a loss with context=NAME): the targets are the module's
 * output z, the context is the output of layer NAME, detached. When NAME comes
 * later in the chain the loss waits until NAME's forward of the same block,
 * then runs and back-propagates through its module: every layer keeps the
 * state of its last forward, which later layers do not touch.
 *
 * Diagnostics (clapp_graph_params.diag_every = N > 0): on the first block and
 * every N-th, each layer's output gets its dead-channel fraction and
 * participation ratio (core/learning/diag.h), and each learning element the L2 norms
 * of its gradient (before clipping), of its update and of its weights; they
 * are in the nodes' `diag` until the next such block (graph.diag_block).
 */
#ifndef CLAPP_CORE_GRAPH_H
#define CLAPP_CORE_GRAPH_H

#include <stdint.h>
#include <stdio.h>

#include "clapp/plugin.h"
#include "learning/diag.h"
#include "learning/loss_form.h"
#include "learning/optim.h"
#include "graph/pipeline.h"
#include "graph/registry.h"

typedef struct clapp_graph_params {
    int                learn;    /* 1: train; 0: frozen inference */
    uint64_t           seed;
    clapp_optim_params optim;
    int64_t            diag_every;   /* diagnostics every this many blocks (and the first); 0: off */
    /* Data parallelism (one graph per process, data sharded): the loss
     * elements of shard k > 0 draw from their PRNG state mixed with k, so
     * that processes draw different negatives from identical weights; the
     * weights' initialisation stays that of `seed`. shards is recorded in
     * checkpoints (a resume needs as many). */
    int32_t            shard, shards;
} clapp_graph_params;

/* One element's diagnostics of the last diagnostic block. */
typedef struct clapp_node_diag {
    clapp_diag_stats out;      /* layers: dead channels and participation ratio */
    int              has_out;
    double           grad_norm, update_norm, weight_norm;   /* learning elements */
    int              has_grad;
} clapp_node_diag;

void clapp_graph_default_params(clapp_graph_params *p);

typedef struct clapp_node {
    const clapp_pipe_elem   *pe;          /* name, type, values */
    const clapp_plugin_desc *desc;
    clapp_plugin_kind        kind;
    void                    *inst;        /* plugin instance (layers, sinks) */
    const clapp_loss_form   *loss_form;   /* loss elements: their form (learning/loss_form.h) ... */
    void                    *loss_self;   /* ... and its instance */
    int                      producer;    /* layer whose output this element sees (-1: the source) */
    int                      target;      /* loss with target=: producer of the target stream */
    int                      context;     /* loss with context= (direct feedback): the layer whose
                                             output is the detached context; -1: none. A later
                                             layer: the loss runs right after its forward */
    int                      prev_in_module; /* layer: previous layer of the same module, or -1 */
    int                      learn;       /* element and its parameters learn */
    double                   lr;
    clapp_stream_info        out_info;    /* stream after this element */
    clapp_block              out;         /* layers: their own output block */
    const clapp_block       *in;          /* input of the current block */
    clapp_tensor             grad;        /* layers: dLoss/d(output) of the current loss */
    const clapp_named_tensor *tensors;
    int32_t                  n_tensors;
    int32_t                  optim_first, optim_count;   /* this element's optimizer slots */
    int                      relu;        /* output is a ReLU's (activation=relu) */
    clapp_node_diag          diag;
    /* statistics */
    clapp_loss_stats         last;
    double                   loss_sum;
    int64_t                  loss_count;
    double                   seconds;     /* time spent in this element */
} clapp_node;

typedef struct clapp_graph {
    clapp_graph_params   p;
    const clapp_host    *host;
    clapp_pipeline_desc *pd;        /* borrowed */
    clapp_node          *nodes;     /* pd->n entries; nodes[0] is the source */
    int                  n;
    clapp_optim          optim;
    clapp_stream_info    source_info;
    int64_t              blocks;
    clapp_diag           diag;          /* workspace, when diag_every > 0 */
    int64_t              diag_block;    /* block number of the nodes' diag (0: none yet) */
    double               diag_seconds;  /* time spent on diagnostics in diag_block */
    int                  loss_version;  /* CLAPP_LOSS_VERSION, or an older one a checkpoint
                                           asked for (its defaults apply; saved again) */
    int                  diag_pending;  /* compute made this a diagnostic block; apply finishes it */
} clapp_graph;

/* Build live elements for a resolved pipeline whose first element is the
 * source, given the stream the source produces. Returns 0 or CLAPP_E_* with
 * err naming the element and the cause. destroy is safe after a failure. */
int  clapp_graph_create(clapp_graph *g, clapp_pipeline_desc *pd, const clapp_stream_info *source,
                        const clapp_graph_params *p, const clapp_host *host, char *err,
                        size_t errlen);

/* Run one block through every element (and learn, if learning):
 * clapp_graph_compute, then clapp_graph_apply. */
int  clapp_graph_process(clapp_graph *g, const clapp_block *blk, char *err, size_t errlen);

/* The learning step in two phases. compute: every element's forward and,
 * when learning, every loss and backward, which leave each learning
 * tensor's gradient of this block in its optimizer slot (g->optim.slots[i].grad;
 * the feature diagnostics too, on a diagnostic block). Nothing is updated
 * yet: a reducer may read and change the gradients (average them over
 * processes) before apply. apply: one optimizer step over every slot from
 * whatever gradient it holds (then zeroed), the block count, and the
 * gradient diagnostics. apply without compute is a step from gradients that
 * came from elsewhere (a process whose data has ended). */
int  clapp_graph_compute(clapp_graph *g, const clapp_block *blk, char *err, size_t errlen);
void clapp_graph_apply(clapp_graph *g);

/* Mix the shard index into every loss element's PRNG state (shard 0: left
 * as it is); after create and after a checkpoint restored the states. */
void clapp_graph_mix_draws(clapp_graph *g);

/* Call finish on every sink. */
int  clapp_graph_finish(clapp_graph *g, char *err, size_t errlen);

/* Switch every sink (probes) between learning and frozen, independently of
 * the layers (clapp eval trains probes on a frozen encoder). */
int  clapp_graph_set_sink_mode(clapp_graph *g, clapp_mode mode);

/* Reset the streaming state of every element (all lanes). */
void clapp_graph_reset(clapp_graph *g);

/* The report() JSON of element i into buf; 0 if it has none (buf = ""). */
int  clapp_graph_report(const clapp_graph *g, int i, char *buf, size_t cap);

/* The block after node i (the source block for i == 0). */
const clapp_block *clapp_graph_output(const clapp_graph *g, int i);

void clapp_graph_destroy(clapp_graph *g);

#endif
