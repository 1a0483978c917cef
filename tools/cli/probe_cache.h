/* The frozen features a probe sees, captured once and replayed.
 *
 * clapp eval trains every probe on a frozen encoder. Decoding and encoding
 * the training files again for every epoch, seed and learning rate would cost
 * minutes per probe; instead one pass of the encoder over each manifest
 * records, per probe, the stream that reaches it (its producer's output, with
 * the lanes' labels), and the probe is then trained and measured by feeding
 * it blocks rebuilt from memory.
 *
 * Two forms, chosen from the labels the stream carries:
 *   - frames (the stream has frame labels, e.g. phones): every valid time
 *     step of every sequence is kept. Replay cuts the sequences into chunks
 *     of at most one block and deals them, shuffled, one chunk per lane and
 *     block, each chunk a sequence of its own (SEQ_START | SEQ_END). This
 *     assumes, as a frame probe does, that the sink treats frames one by one.
 *   - mean (only a sequence-level class label, e.g. actions): the time average
 *     of each sequence is kept, and replayed as a one-step sequence. This
 *     assumes, as a clip probe does, that the sink averages a sequence over
 *     time before anything else.
 */
#ifndef CLAPP_CLI_PROBE_CACHE_H
#define CLAPP_CLI_PROBE_CACHE_H

#include <stdint.h>

#include "clapp/plugin.h"

typedef enum cli_cache_form { CLI_CACHE_FRAMES = 0, CLI_CACHE_MEAN = 1 } cli_cache_form;

/* One sequence (a file of the manifest) as the probe saw it. */
typedef struct cli_cached_seq {
    char    *name;
    int32_t  class_label;
    int64_t  steps;        /* time steps stored (1 once a mean sequence is closed) */
    int64_t  cap;
    float   *x;            /* [steps][F], time-major */
    double  *sum;          /* mean form: running sum [F] while the sequence is open */
    int64_t  summed;
    int64_t  pts0;         /* index, at the stream's rate, of the first stored step */
    int32_t *labels;       /* frame labels at label_rate from the sequence start; -1: none */
    int64_t  n_labels, cap_labels;
} cli_cached_seq;

/* The captured input of one sink of a pipeline, for one manifest. */
typedef struct cli_probe_cache {
    clapp_stream_info info;        /* the stream it sees (its configure input) */
    int64_t           C, HW, F;    /* channels, positions per step (1 for 3-D), F = C * HW */
    cli_cache_form    form;
    double            label_rate;
    cli_cached_seq   *seq;
    int64_t           n_seq, cap_seq;
    int64_t          *lane_seq;    /* [lanes] open sequence of each lane, -1: none */
    int64_t          *lane_id;     /* [lanes] the source's seq_id of that sequence */
} cli_probe_cache;

/* splitmix64's output function: shuffle orders and probe seeds of eval. */
uint64_t cli_mix64(uint64_t z);

/* Prepare a cache for a sink whose input is the stream `in`; form as above.
 * Returns 0 or CLAPP_E_NOMEM. */
int  cli_probe_cache_init(cli_probe_cache *c, const clapp_stream_info *in, cli_cache_form form);
/* Record the block the sink has just seen. */
int  cli_probe_cache_capture(cli_probe_cache *c, const clapp_block *blk);
/* Close the open mean sequences (after the last block). */
void cli_probe_cache_close(cli_probe_cache *c);
/* Labelled frames (frame form) or labelled sequences (mean form) the probe can score. */
int64_t cli_probe_cache_count(const cli_probe_cache *c, int32_t classes, int64_t *counts);
void cli_probe_cache_free(cli_probe_cache *c);

/* Blocks one replay of the cache makes. */
int64_t cli_probe_cache_blocks(const cli_probe_cache *c);
/* Feed the cache to a probe instance: every chunk once, in an order shuffled
 * with `shuffle_seed` (0: the order of the manifest). Returns 0 or the
 * plugin's negative status. */
int  cli_probe_cache_replay(const cli_probe_cache *c, const clapp_plugin_desc *desc, void *inst,
                            uint64_t shuffle_seed);

#endif
