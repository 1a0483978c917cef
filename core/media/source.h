/* clapp core — the source element: manifest entries decoded into blocks of
 * B lanes in lockstep.
 *
 * Each lane reads one file at a time in time order; at the end of a file it
 * takes the next unread entry of the manifest, and its first block of the new
 * file carries CLAPP_LANE_SEQ_START (the last block of a file carries
 * CLAPP_LANE_SEQ_END). A block never mixes two files in one lane: a lane whose
 * file ends mid-block has len < T for that block. Lanes with nothing left to
 * read have len 0 and seq_id -1; the source ends when all lanes are idle.
 *
 * Decoding runs in its own thread ahead of compute, through a bounded queue
 * of `queue` blocks; memory is bounded by block size x queue depth, not file
 * length.
 *
 * A file that cannot be opened or decoded is reported once through the host
 * log with its path and the reason; the lane moves on to the next file, and
 * clapp_source_failed_count() tells how many failed.
 *
 * mode=window (training à la GIM): each lane takes a random window of
 * `block` frames (start a multiple of `window_align`, >= window_align) from
 * its file, one window per file per epoch, in a fresh sequence each
 * (SEQ_START | SEQ_END); files shorter than the window are skipped with a
 * warning.
 *
 * Details of the lane metadata:
 *   seq_id      manifest entry index + epoch * entries (unique over the run)
 *   seq_name    the entry's key (manifest.h); NULL for an idle lane
 *   pts         index of the block's first step in the file (window mode:
 *               the window start, a multiple of window_align)
 *   class_label id of the entry's LABEL column in the class set, -1 if none
 *   labels      when the entry has an ALIGNMENT, the decoding is audio and
 *               label_rate > 0: the frames at label_rate that COVER the
 *               block's span [pts, pts+len) (steps at the output rate R):
 *               frames floor(pts*lr/R) .. ceil((pts+len)*lr/R) - 1, so the
 *               label of any step t of the block is
 *               labels[floor((pts+t+0.5)*lr/R) - label_pts]. Neighbouring
 *               blocks share a frame when a boundary falls inside it;
 *               placed at label_pts, the blocks' labels rebuild
 *               clapp_alignment_frames() of the whole file (the last partial
 *               frame included). label_pts is the first of them. Gaps in the
 *               alignment give the silence id: the first of "pau", "sil",
 *               "h#", "_" the set knows; if none and the set is not frozen,
 *               "pau" is added with the other three as its aliases; else -1.
 *               Owned by the source, valid with the block. NULL otherwise.
 * Augmentation (p->aug, augment.h; audio only) changes what the decoder
 * delivers before anything above sees it: with speed perturbation, pts,
 * lengths, windows and label frames are all on the resampled time line
 * (labels follow the speech they belong to).
 * Label ids in a set that is not frozen are added by the decode thread: read
 * such a set only after the source has ended.
 *
 * Interrupts: when the host's decode.interrupt callback returns nonzero, a
 * blocking open or read (a FIFO without a writer, a stalled network
 * stream) gives up within about 0.1 s; the file is named in one warning
 * ("PATH: interrupted while waiting for data; reading stopped"), is not
 * counted as failed, and the source ends (clapp_source_next returns 0 once
 * the blocks already decoded are taken).
 *
 * Failures: a file fails when it cannot be opened, a read fails (the lane
 * then ends the sequence with what it has, flagged SEQ_END), it holds no
 * media at all, or its .phn file does not load. In stream mode, at the end of
 * a file (its data delivered and used), it also fails if its alignment runs
 * more than 10 ms past the end of the audio (logged naming the .phn file and
 * line; up to 10 ms is tolerated, flite's last pau runs ~5 ms over). Each is
 * logged once as "PATH: reason" at CLAPP_LOG_ERROR and counted once; later
 * epochs skip that entry silently. Files too short for the window are
 * skipped with one warning and counted in neither count.
 *
 * Damage is a warning: in stream mode, a file read to its end whose decoder
 * skipped damaged packets ("PATH: damaged: N packet(s) skipped, about S s of
 * media lost") or that ended before the length its header declares ("PATH:
 * truncated: D s decoded of the H s its header declares (M s missing)"; a
 * WAV's data size counts to 10 ms, a container's duration only for a clear
 * shortfall, > 10 % and > 0.25 s) is logged at CLAPP_LOG_WARNING (the first
 * epoch only) and counts as done: what could be decoded was used. With strict (the source's
 * strict=true, the command's --strict) the same is an error: the file fails
 * as above and its sequence ends flagged SEQ_FAILED.
 */
#ifndef CLAPP_CORE_SOURCE_H
#define CLAPP_CORE_SOURCE_H

#include <stdint.h>

#include "media/augment.h"
#include "clapp/plugin.h"
#include "media/decode.h"
#include "media/manifest.h"

typedef enum clapp_source_mode { CLAPP_SOURCE_STREAM = 0, CLAPP_SOURCE_WINDOW = 1 } clapp_source_mode;

typedef struct clapp_source_params {
    clapp_decode_params decode;      /* kind, rate, size, fps, channels, backend */
    int32_t             lanes;       /* B */
    int64_t             block;       /* T: time steps (samples or frames) per block */
    int32_t             queue;       /* blocks decoded ahead */
    clapp_source_mode   mode;
    int64_t             window_align;/* window mode: start granularity (160 for 10 ms at 16 kHz) */
    double              label_rate;  /* frame labels per second from .phn alignments (0: none) */
    uint64_t            seed;        /* window starts and shuffling */
    int                 shuffle;     /* shuffle manifest order per epoch */
    int                 strict;      /* damage (skipped packets, a cut file) fails the file */
    int32_t             epochs;      /* passes over the manifest */
    int32_t             shard, shards; /* data parallelism: of each epoch's order (shuffled
                                      * from seed alike in every process) this source reads
                                      * the positions shard, shard + shards, ... (default 0, 1) */
    float               gain, offset;/* every valid value becomes gain * value + offset (input
                                      * normalisation; default 1, 0) */
    clapp_labelset     *classes;     /* set for the LABEL column; NULL: the `labels` set of create
                                      * (a frozen set refuses unknown class names at create) */
    clapp_aug_params    aug;         /* audio augmentation before gain/offset (augment.h); all
                                      * off by default; refused on video */
} clapp_source_params;

void clapp_source_default_params(clapp_source_params *p);
/* The defaults, then the settings of a resolved `source` element (its
 * values in table order, as the pipeline gives them): decoding, lanes,
 * block, queue, mode, labels, shuffle, gain/offset and augmentation. The
 * caller sets seed, epochs and classes. A resolved pipeline has every key
 * of the source's table; a missing one would read as 0 or "". */
void clapp_source_params_from_values(clapp_source_params *p, const clapp_param_value *v,
                                     int32_t n);

typedef struct clapp_source clapp_source;

/* The manifest and label set(s) are borrowed and must outlive the source.
 * `labels` may be NULL (no frame labels, no class labels unless
 * p->classes is set). Returns 0, CLAPP_E_INVAL (bad parameters),
 * CLAPP_E_FORMAT (a class label unknown to a frozen set, logged with the
 * manifest line) or CLAPP_E_NOMEM. Allocates all block memory here:
 * (queue + 1) blocks, one of them in the caller's hands. */
int clapp_source_create(clapp_source **src, const clapp_source_params *p,
                        const clapp_manifest *m, clapp_labelset *labels,
                        const clapp_host *host);

/* The stream the source produces: [B, 1, T] audio, [B, C, T, H, W] video. */
void clapp_source_info(const clapp_source *src, clapp_stream_info *info);

/* Start decoding (spawns the decode thread). */
int clapp_source_start(clapp_source *src);

/* Next block, valid until the next call or clapp_source_release().
 * Returns 1 with *blk set, 0 at the end (all lanes idle), <0 on fatal errors
 * (CLAPP_E_STATE before start). Blocks until the decode thread has one. */
int clapp_source_next(clapp_source *src, const clapp_block **blk);

/* Hand the block of the last clapp_source_next back early, so the decode
 * thread can reuse its memory. */
void clapp_source_release(clapp_source *src);

/* Files that failed to open or decode so far. */
int32_t clapp_source_failed_count(const clapp_source *src);
/* 1 if the host's interrupt ended a wait and so the source (see above). */
int     clapp_source_interrupted(const clapp_source *src);
/* Files fully read so far. */
int32_t clapp_source_done_count(const clapp_source *src);

/* Stops the thread and frees everything; safe on NULL and partial create. */
void clapp_source_destroy(clapp_source *src);

#endif
