/* clapp core — checkpoints: one safetensors file per graph.
 *
 * Tensors: every element's exposed tensors as "ELEMENT.NAME" (float32), and
 * the optimizer's moments as "__optim__.ELEMENT.NAME.m" / ".v".
 * __metadata__ (string -> string): "format" = "clapp-checkpoint-1",
 * "pipeline" (canonical pipeline text), "elements" (JSON: name -> {id,
 * version}), "blocks" and "optim_step" (counters), "seed" (the run seed) and
 * "rng" (JSON: loss element name -> its PRNG state as 4 hex words; restored
 * on load, so a resumed run draws what the uninterrupted run draws), and
 * "shards" when more than one process trained it (data parallelism).
 *
 * Writing is atomic: a temporary file in the same folder, fsync, rename,
 * fsync of the folder; a crash leaves the previous checkpoint intact.
 * Sinks' tensors (probe weights) are saved but optional on loading, so an
 * encoder trained without probes loads into a pipeline with probes.
 * Loading checks everything before it changes anything: a truncated or
 * corrupt file, a missing tensor, a shape or element mismatch is an error
 * naming the file and the cause, and the graph is left untouched.
 */
#ifndef CLAPP_CORE_CHECKPOINT_H
#define CLAPP_CORE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "graph/graph.h"

typedef struct clapp_ckpt_options {
    int with_optimizer;   /* save/restore optimizer moments and step (training resume) */
    int strict;           /* load: every tensor of the graph must be in the file */
} clapp_ckpt_options;

int clapp_ckpt_save(const clapp_graph *g, const char *path,
                          const clapp_ckpt_options *opt, char *err, size_t errlen);

int clapp_ckpt_load(clapp_graph *g, const char *path, const clapp_ckpt_options *opt,
                          char *err, size_t errlen);

/* Read only the metadata value `key` (malloc'd string, or NULL with err set). */
char *clapp_ckpt_read_meta(const char *path, const char *key, char *err, size_t errlen);

#endif
