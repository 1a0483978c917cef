/* clapp — the host API: what a C program (or Python, through ctypes) calls
 * to run, train and read a pipeline inside its own process.
 *
 * One opaque handle, clapp_pipeline: a pipeline description (text or a .pipe
 * file, with --set style overrides), then, once opened, its live elements
 * fed either from a manifest (the library decodes, as `clapp run` does) or
 * from frames the caller pushes out of its own buffers.
 *
 *     clapp_pipeline *p = NULL;
 *     clapp_options o;
 *     clapp_options_init(&o);
 *     if (clapp_pipeline_create_from_file(&p, "raw.pipe", NULL, 0, &o) != CLAPP_OK) ...
 *     clapp_pipeline_open_push(p, 1);
 *     clapp_pipeline_begin(p, 0, "mic", 16000);
 *     clapp_pipeline_push(p, 0, samples, n);
 *     clapp_pipeline_end(p, 0);
 *     while ((rc = clapp_pipeline_step(p)) == 1) {
 *         const clapp_block *b;
 *         clapp_pipeline_output(p, "conv1d0", &b);   // b->x [B, C, T], b->lane[i].len valid steps
 *     }
 *     clapp_pipeline_finish(p);
 *     clapp_pipeline_destroy(p);
 *
 * Status: every call that can fail returns CLAPP_OK (0) or a negative
 * CLAPP_E_* (clapp/plugin.h); clapp_pipeline_step also returns 1. After a
 * failure, clapp_pipeline_error(p) gives the message (naming the file, line,
 * element or key and the cause); clapp_status_string() names a status.
 *
 * Thread contract (every call below, unless it says otherwise):
 *   - A handle is used by one thread at a time: the caller serialises all
 *     calls on one clapp_pipeline. Different handles may be used
 *     concurrently from different threads; the library keeps no global
 *     mutable state.
 *   - In manifest mode the library runs its own decode thread per handle,
 *     started by the first clapp_pipeline_step and joined by
 *     clapp_pipeline_destroy. The log callback (clapp_options.log) may be
 *     called from that thread, so it must be thread-safe.
 *   - BLAS may use threads inside a call; none outlive the call.
 *
 * Ownership: pointers returned by the library (blocks, names, the error
 * message) stay owned by the handle and valid as each call says; the caller
 * owns everything it passes in and may reuse it as soon as the call returns.
 */
#ifndef CLAPP_CLAPP_H
#define CLAPP_CLAPP_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"
#include "clapp/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CLAPP_API __attribute__((visibility("default")))
#else
#define CLAPP_API
#endif

typedef struct clapp_pipeline clapp_pipeline;

/* One learning tensor's gradient, as the gradient hook sees it. */
typedef struct clapp_grad {
    const char  *name;    /* "ELEMENT.TENSOR": a layer's weights, a loss element's W_k,
                             a supervised classifier's weight and bias, ... */
    float       *grad;    /* numel floats: the gradient of this step; the hook may change it */
    const float *value;   /* the tensor's values before this step's update */
    int64_t      numel;
} clapp_grad;

/* The gradient hook (clapp_pipeline_set_data_parallel): called by clapp_pipeline_step
 * of a learning pipeline between computing the gradients of a block and
 * applying them (one optimizer step), with every learning tensor's gradient,
 * always the same list in the same order. *count is 1 when this process
 * computed the gradients from a block of its own, 0 when it had none (its
 * data has ended; the gradients are zero). The hook leaves in grads what
 * the optimizer is to apply (a data-parallel reducer: the mean over the
 * processes that had a block) and in *count how many blocks that combines;
 * 0 (no process had a block) applies nothing and ends the data. It may call
 * clapp_pipeline_loss on its pipeline (the losses of this block). Returns 0
 * or a negative CLAPP_E_*, which fails the step. */
typedef int (*clapp_grad_hook)(void *user, clapp_grad *grads, int32_t n_grads, int64_t *count);

/* The log callback: `who` is an element or file name (may be NULL), the
 * message has no trailing newline. Called from the caller's thread and, in
 * manifest mode, from the decode thread. */
typedef void (*clapp_log_fn)(void *user, int level, const char *who, const char *message);

/* How a pipeline runs. Fill with clapp_options_init, then change fields. */
typedef struct clapp_options {
    uint32_t     struct_size;   /* sizeof(clapp_options), set by clapp_options_init */
    uint64_t     seed;          /* run seed (element seeds mix it with their names); 1 */
    int          learn;         /* 1: the pipeline can learn (gradients, optimizer) and starts
                                   learning; 0 (default): frozen inference only */
    double       lr;            /* default learning rate; < 0: the library's (Adam 2e-4) */
    double       adam_eps, adam_beta1, adam_beta2;   /* 1e-8, 0.9, 0.999 */
    int64_t      warmup;        /* lr ramps from 0 over this many steps; 0: off */
    double       clip;          /* per-element gradient L2 norm clip; 0: off */
    double       weight_decay;  /* decoupled (AdamW); 0: off */
    int64_t      diag_every;    /* diagnostics every N blocks; 0 (default): off */
    int          log_level;     /* messages at or below this CLAPP_LOG_* level are passed on;
                                   default CLAPP_LOG_WARNING */
    clapp_log_fn log;           /* NULL: "clapp: ..." lines on standard error */
    void        *log_user;
} clapp_options;

/* Loss statistics of one loss element. */
typedef struct clapp_loss_info {
    double  last;        /* loss of the last block (NaN if it had no pair) */
    int64_t last_pairs;  /* positive pairs (or labelled frames) of the last block */
    double  mean;        /* mean over every block with pairs since open (NaN if none) */
    int64_t count;       /* blocks that contributed to mean */
} clapp_loss_info;

/* Counters of an open pipeline. */
typedef struct clapp_run_info {
    int64_t blocks;        /* blocks processed (a resumed run counts the checkpoint's) */
    int64_t steps;         /* valid source time steps processed (samples or frames), all lanes, by
                              this handle (a resumed run's skipped blocks are not counted) */
    int32_t files_done;    /* manifest mode: files fully read */
    int32_t files_failed;  /* manifest mode: files that could not be read (logged) */
    double  lr_scale;      /* factor on every learning rate at the last optimizer step (warmup) */
    double  diag_seconds;  /* time the last diagnostic block spent on diagnostics */
    int32_t files;         /* manifest mode: entries of the manifest */
    int32_t aligned_files; /* manifest mode: entries with a .phn alignment (frame labels) */
} clapp_run_info;

/* ---- library -------------------------------------------------------------- */

/* [any thread] "MAJOR.MINOR.PATCH" of the library (CMake's project version). */
CLAPP_API const char *clapp_version(void);
/* [any thread] A short name of a status ("invalid argument"); never NULL. */
CLAPP_API const char *clapp_status_string(int status);
/* [any thread] Defaults into *o. */
CLAPP_API void clapp_options_init(clapp_options *o);
/* [any thread] Free memory the library returned (clapp_pipeline_text). */
CLAPP_API void clapp_free(void *ptr);

/* ---- create and describe -------------------------------------------------- */

/* [any thread; the new handle then belongs to it] Parse pipeline text (or
 * read a .pipe file), apply the overrides "NAME.KEY=VALUE" (as --set), and
 * check everything against the element registry (built-ins and the plugins
 * on $CLAPP_PLUGIN_PATH, beside the library in clapp/plugins/, and in the
 * install folder; world-writable plugin folders are refused). opt may be
 * NULL (defaults).
 * On failure *p is still set when it could be allocated, so that
 * clapp_pipeline_error(*p) tells why; destroy it in any case. */
CLAPP_API int clapp_pipeline_create_from_text(clapp_pipeline **p, const char *text,
                                              const char *const *overrides, int n_overrides,
                                              const clapp_options *opt);
CLAPP_API int clapp_pipeline_create_from_file(clapp_pipeline **p, const char *path,
                                              const char *const *overrides, int n_overrides,
                                              const clapp_options *opt);

/* [handle's thread, before open] Insert element TYPE named NAME right after
 * element AFTER, with key/value pairs kv[0..2*n_kv) ("key", "value", ...),
 * and check the pipeline again (attach a probe or a writer). When the
 * pipeline no longer checks (an unknown TYPE or key, a bad value), the
 * handle is left for clapp_pipeline_error and destroy only. */
CLAPP_API int clapp_pipeline_add_element(clapp_pipeline *p, const char *after, const char *type,
                                         const char *name, const char *const *kv, int n_kv);

/* [handle's thread, before open] Apply one more override "NAME.KEY=VALUE"
 * (as --set) and check the pipeline again: for elements added with
 * clapp_pipeline_add_element. When the pipeline no longer checks, the
 * handle is left for clapp_pipeline_error and destroy only. */
CLAPP_API int clapp_pipeline_override(clapp_pipeline *p, const char *assignment);

/* [handle's thread] The resolved pipeline as canonical text, every default
 * filled in (malloc'd; free with clapp_free). */
CLAPP_API int clapp_pipeline_text(const clapp_pipeline *p, char **text);

/* [handle's thread] Number of elements, the source included (element 0). */
CLAPP_API int clapp_pipeline_element_count(const clapp_pipeline *p, int *n);
/* [handle's thread] Name, type and kind (CLAPP_KIND_*) of element i; the
 * strings stay valid until the handle is destroyed or an element is inserted.
 * Any of the out pointers may be NULL. */
CLAPP_API int clapp_pipeline_element(const clapp_pipeline *p, int i, const char **name,
                                     const char **type, int *kind);

/* [handle's thread] Element NAME's descriptor (clapp/plugin.h) and its
 * resolved parameter values, defaults filled in, in table order (as
 * create() gets them): a host can make more instances of the element
 * itself. Valid until the handle is destroyed or the pipeline changes
 * (add_element, override). */
CLAPP_API int clapp_pipeline_element_values(const clapp_pipeline *p, const char *name,
                                            const clapp_plugin_desc **desc,
                                            const clapp_param_value **values);

/* [handle's thread, before open] Give class name NAME the next class id
 * (the manifest's LABEL column numbers its names in order of first
 * appearance, after the ones given here): pipelines that read several
 * manifests agree on the ids. */
CLAPP_API int clapp_pipeline_add_class(clapp_pipeline *p, const char *name);
/* [handle's thread; after the data has ended for the manifest's names] The
 * class names known so far, id i's name valid until destroy. */
CLAPP_API int clapp_pipeline_class_count(const clapp_pipeline *p, int *n);
CLAPP_API int clapp_pipeline_class_name(const clapp_pipeline *p, int i, const char **name);

/* [handle's thread, before open] Data parallelism: `shards` processes (MPI
 * ranks, say) train one model, each on its share of the data, and `hook`
 * (NULL: none) combines their gradients before every optimizer step
 * (clapp_grad_hook). In manifest mode, of each epoch's order of the
 * manifest (with the source's shuffle=true, shuffled from the seed alike in
 * every process) this process reads the positions shard, shard + shards,
 * ...; clapp_pipeline_open_files too. The weights start from the seed alike everywhere; the loss elements
 * of shard k > 0 draw their own negatives (their PRNG state mixed with k).
 * Checkpoints record shards, and resume refuses another number. Default:
 * shard 0 of 1, no hook. A separate call rather than clapp_options fields,
 * so that hosts built against the smaller clapp_options keep working. */
CLAPP_API int clapp_pipeline_set_data_parallel(clapp_pipeline *p, int32_t shard, int32_t shards,
                                               clapp_grad_hook hook, void *user);

/* ---- open: where the data comes from ------------------------------------- */

/* [handle's thread, once] Stream the files of a manifest (PATH [TAB LABEL
 * [TAB ALIGNMENT]] lines) through the pipeline `epochs` times (>= 1), as
 * `clapp run` / `clapp train` do: the source element's settings apply
 * (lanes, block, mode, augmentation, labels). */
CLAPP_API int clapp_pipeline_open_manifest(clapp_pipeline *p, const char *manifest, int epochs);

/* [handle's thread, once] Every file of a manifest once, whole and as it
 * is, whatever the source's mode= and augmentation say (stream mode, no
 * augmentation, no shuffling): what feature extraction and evaluation read. */
CLAPP_API int clapp_pipeline_open_files(clapp_pipeline *p, const char *manifest);

/* [handle's thread, before open] A way to stop waiting for input: in
 * manifest mode the decode thread calls interrupt(user) while it waits for
 * data (a FIFO without a writer, a stalled network stream; about every
 * 0.05-0.1 s) and between its reads, so it must be thread-safe and quick
 * (read a flag that a signal handler sets: an atomic or a volatile
 * sig_atomic_t). Once it returns nonzero the wait ends, the file being read
 * is named in one warning ("PATH: interrupted while waiting for data;
 * reading stopped"; it does not count as failed), decoding stops, and
 * clapp_pipeline_step returns 0 once the blocks decoded before are used.
 * NULL (the default): no interrupt. */
CLAPP_API int clapp_pipeline_set_interrupt(clapp_pipeline *p, int (*interrupt)(void *user), void *user);

/* [handle's thread, once] Frames come from the caller (clapp_pipeline_begin
 * / push / end), `lanes` streams side by side (0: the source's lanes=). The
 * stream is the source's: audio [lanes, 1, block] at rate=, or video
 * [lanes, C, block, height, width] at fps=. Pushed data is taken as it is:
 * no decoding, resampling, augmentation or labels; the source's gain and
 * offset apply; audio at another rate is resampled (clapp_pipeline_begin). */
CLAPP_API int clapp_pipeline_open_push(clapp_pipeline *p, int32_t lanes);

/* [handle's thread, push mode] Start a stream on an idle lane. `name` keys
 * its outputs (the features sink's file name); `rate` is the rate of the
 * frames the caller will push. Audio: samples per second, a whole number;
 * another rate than the stream's is resampled as the decoder resamples
 * files (libswresample, default options, its delay line flushed at end),
 * so pushed samples give what the same samples in a file give. Video:
 * frames per second, which must equal the stream's fps (CLAPP_E_INVAL
 * naming both; frame-rate conversion is not done yet). */
CLAPP_API int clapp_pipeline_begin(clapp_pipeline *p, int32_t lane, const char *name, double rate);
/* [handle's thread, push mode] Append n consecutive frames to the lane's
 * stream: audio, n float samples; video, n frames of [C, H, W] floats each
 * (channel planes, rows, columns), consecutive at the stream's fps (frame
 * timestamps are not taken yet). Copied; nothing is processed until step. */
CLAPP_API int clapp_pipeline_push(clapp_pipeline *p, int32_t lane, const float *data, int64_t n);
/* [handle's thread, push mode] The lane's stream has no more frames: its
 * last block carries SEQ_END, then the lane is idle again. */
CLAPP_API int clapp_pipeline_end(clapp_pipeline *p, int32_t lane);

/* ---- run -------------------------------------------------------------------- */

/* [handle's thread, after open] Process one block: every element's forward
 * and, when learning, every loss and one optimizer step. Returns 1 when a
 * block was processed, 0 when none can be: manifest mode, the data has
 * ended; push mode, a stream that has not ended needs more than one block
 * of frames buffered (its last block is held back until end, so that it
 * carries SEQ_END), or no stream has data. Negative on failure.
 * With a gradient hook (clapp_pipeline_set_data_parallel) and learning, the hook
 * runs between the gradients and the optimizer step; in manifest mode, once
 * this process's data has ended, each step still calls it with *count = 0
 * and applies what it gives back, returning 2 (an optimizer step from the
 * other processes' gradients, no block of this one), until the hook says
 * no process had a block (then 0). */
CLAPP_API int clapp_pipeline_step(clapp_pipeline *p);

/* [handle's thread, after open] The block that element NAME produced in the
 * last step (a layer's output; for the source, sinks and losses, the stream
 * they saw): x is [B, C, T] or [B, C, T, H, W], lane[b].len the valid steps
 * of lane b (steps past it are zero), lane[b].pts the index of its first
 * step in its stream, lane[b].seq_id -1 for an idle lane. Valid until the
 * next step, finish or destroy. CLAPP_E_STATE before the first step. */
CLAPP_API int clapp_pipeline_output(clapp_pipeline *p, const char *name, const clapp_block **blk);

/* [handle's thread, after open] The stream element NAME produces: shape of
 * one block and rate. */
CLAPP_API int clapp_pipeline_stream(const clapp_pipeline *p, const char *name,
                                    clapp_stream_info *info);

/* [handle's thread, after the last step] Flush the sinks (writers close
 * their files, probes finish). */
CLAPP_API int clapp_pipeline_finish(clapp_pipeline *p);

/* [handle's thread, after open, between steps] Learning on (1) or off (0).
 * On needs a pipeline created with clapp_options.learn = 1 (CLAPP_E_STATE
 * otherwise); off keeps its optimizer state, so on again continues. */
CLAPP_API int clapp_pipeline_set_learning(clapp_pipeline *p, int on);

/* ---- checkpoints ------------------------------------------------------------ */

/* [handle's thread, after open, between steps] Write every element's tensors
 * (and, when the pipeline learns, the optimizer state) to a safetensors
 * file, atomically: the previous file stays intact on failure. */
CLAPP_API int clapp_pipeline_save(clapp_pipeline *p, const char *path);
/* [handle's thread, after open, between steps] Load the weights of a
 * checkpoint (every tensor of the pipeline's layers and losses must be in
 * it; sinks' are optional). Checks everything before changing anything. */
CLAPP_API int clapp_pipeline_load(clapp_pipeline *p, const char *path);
/* [handle's thread, after open, before the first step; learning pipelines]
 * Continue a training run: weights, optimizer moments and step, the loss
 * elements' PRNG states and the block count; in manifest mode the source
 * then decodes and drops the blocks the checkpoint has already learned
 * from (here, so a manifest too short is an error of this call), and the
 * run continues where it stopped. The seed must be the checkpoint's
 * (CLAPP_E_INVAL naming both). */
CLAPP_API int clapp_pipeline_resume(clapp_pipeline *p, const char *path);

/* ---- measurements ---------------------------------------------------------- */

/* [handle's thread, after open, between steps] What element NAME measured,
 * as one JSON object (a probe's accuracy and counts) in buf, NUL-terminated;
 * "" if it reports nothing. CLAPP_E_NOMEM if cap is too small. */
CLAPP_API int clapp_pipeline_report(clapp_pipeline *p, const char *name, char *buf, size_t cap);
/* [handle's thread, after open] Loss statistics of loss element NAME. */
CLAPP_API int clapp_pipeline_loss(const clapp_pipeline *p, const char *name, clapp_loss_info *info);
/* [handle's thread, after open] Counters. */
CLAPP_API int clapp_pipeline_run_info(const clapp_pipeline *p, clapp_run_info *info);

/* [handle's thread, after open] What element NAME cost and, with
 * clapp_options.diag_every > 0, its diagnostics of the last diagnostic
 * block (the first and every diag_every-th). */
typedef struct clapp_element_stats {
    double  seconds;       /* time spent in the element (forward, loss, backward) since open */
    int64_t diag_block;    /* block number of the diagnostics below; 0: none yet */
    int     has_out;       /* layers: statistics of the output */
    double  dead;          /* fraction of output channels zero (constant, without ReLU) at every valid step */
    double  pr;            /* participation ratio of the channels' covariance, tr(C)^2 / tr(C^2) */
    int     has_grad;      /* learning elements: L2 norms over all the element's tensors */
    double  grad_norm;     /* before clipping */
    double  update_norm;
    double  weight_norm;
} clapp_element_stats;
CLAPP_API int clapp_pipeline_element_stats(const clapp_pipeline *p, const char *name,
                                           clapp_element_stats *stats);

/* [any thread] Read one __metadata__ value of a checkpoint ("pipeline",
 * "blocks", "seed", ...) into *value (malloc'd; free with clapp_free).
 * On failure err (may be NULL) names the file and the cause. */
CLAPP_API int clapp_checkpoint_metadata(const char *path, const char *key, char **value, char *err,
                                        size_t errlen);

/* ---- the catalog: every element the library can build ---------------------- */

typedef struct clapp_catalog clapp_catalog;

/* [any thread; the handle then belongs to it] The built-in elements and the
 * plugins found as clapp_pipeline_create searches them (a plugin that does
 * not load is logged through opt's log and skipped). opt may be NULL. */
CLAPP_API int clapp_catalog_create(clapp_catalog **c, const clapp_options *opt);
/* [any thread; the handle then belongs to it] The built-in elements and
 * those of one plugin file, nothing from the search path (what `clapp
 * validate` checks). On failure (CLAPP_E_IO, CLAPP_E_ABI, CLAPP_E_NOTFOUND)
 * *c is still set when it could be allocated and clapp_catalog_error names
 * the file and the cause; destroy it in any case. A path without '/' is
 * taken in the current folder. */
CLAPP_API int clapp_catalog_create_file(clapp_catalog **c, const char *path, const clapp_options *opt);
/* [handle's thread] Number of elements. */
CLAPP_API int clapp_catalog_count(const clapp_catalog *c, int *n);
/* [handle's thread] Element i: its static descriptor (clapp/plugin.h: id,
 * version, kind, help, parameter table) and the .so it came from (NULL for
 * built-ins); both valid until the catalog is destroyed. */
CLAPP_API int clapp_catalog_element(const clapp_catalog *c, int i, const clapp_plugin_desc **desc,
                                    const char **file);
/* [handle's thread] Index of element ID; CLAPP_E_NOTFOUND (the message lists the valid ids). */
CLAPP_API int clapp_catalog_find(clapp_catalog *c, const char *id, int *index);
/* [handle's thread] The parameter values of element i as a pipeline would
 * give them to create(): `settings` are "KEY=VALUE" texts in pipeline
 * syntax, checked against the element's table (CLAPP_E_NOTFOUND or
 * CLAPP_E_INVAL naming the key), every other key at its default. *values
 * holds the descriptor's n_params values in table order, valid until the
 * next call of this function on the catalog or its destruction. */
CLAPP_API int clapp_catalog_values(clapp_catalog *c, int i, const char *const *settings, int n_settings,
                                   const clapp_param_value **values);
/* [handle's thread] The message of the last call that failed, "" if none. */
CLAPP_API const char *clapp_catalog_error(const clapp_catalog *c);
/* [handle's thread] Unload the plugins. Safe on NULL. */
CLAPP_API void clapp_catalog_destroy(clapp_catalog *c);

/* ---- errors and teardown --------------------------------------------------- */

/* [handle's thread] The message of the last call on this handle that
 * failed, "" if none has; valid until the next call. NULL p: a message
 * saying so. */
CLAPP_API const char *clapp_pipeline_error(const clapp_pipeline *p);

/* [handle's thread] Stop the decode thread, free everything. Safe on NULL
 * and on a handle whose create or open failed. */
CLAPP_API void clapp_pipeline_destroy(clapp_pipeline *p);

#ifdef __cplusplus
}
#endif
#endif /* CLAPP_CLAPP_H */
