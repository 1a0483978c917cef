/* clapp — tensors and blocks: the data that moves between elements.
 *
 * Header-only, so a plugin needs nothing but include/clapp/ to use it.
 * Tensors are float32, row-major, outermost dimension first (as numpy),
 * contiguous, with data aligned to CLAPP_ALIGN bytes when the host or these
 * helpers allocate them.
 */
#ifndef CLAPP_TENSOR_H
#define CLAPP_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLAPP_MAX_DIMS 6
#define CLAPP_ALIGN 64

typedef struct clapp_tensor {
    float  *data;                    /* numel floats, row-major */
    int32_t ndim;
    int64_t shape[CLAPP_MAX_DIMS];   /* shape[0] is the outermost dimension */
} clapp_tensor;

static inline int64_t clapp_tensor_numel(const clapp_tensor *t)
{
    int64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Allocate t->data for the shape already set in t; zero-filled.
 * Returns 0 or -1 (out of memory). */
static inline int clapp_tensor_alloc(clapp_tensor *t)
{
    size_t bytes = (size_t)clapp_tensor_numel(t) * sizeof(float);
    size_t rounded = (bytes + CLAPP_ALIGN - 1) / CLAPP_ALIGN * CLAPP_ALIGN;
    if (rounded == 0)
        rounded = CLAPP_ALIGN;
    t->data = (float *)aligned_alloc(CLAPP_ALIGN, rounded);
    if (!t->data)
        return -1;
    memset(t->data, 0, rounded);
    return 0;
}

/* Set the shape from a list and allocate. */
static inline int clapp_tensor_alloc_shape(clapp_tensor *t, int32_t ndim, const int64_t *shape)
{
    memset(t, 0, sizeof(*t));
    if (ndim < 0 || ndim > CLAPP_MAX_DIMS)
        return -1;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    return clapp_tensor_alloc(t);
}

static inline void clapp_tensor_free(clapp_tensor *t)
{
    if (!t)
        return;
    free(t->data);
    t->data = NULL;
}

static inline void clapp_tensor_zero(clapp_tensor *t)
{
    if (t->data)
        memset(t->data, 0, (size_t)clapp_tensor_numel(t) * sizeof(float));
}

/* ------------------------------------------------------------------------ */
/* Blocks: B lanes in lockstep, each a run of consecutive time steps.        */

enum {
    CLAPP_LANE_SEQ_START = 1u << 0, /* first block of a sequence: layers reset this lane's state */
    CLAPP_LANE_SEQ_END   = 1u << 1, /* last block of a sequence: sinks close it, layers flush   */
    CLAPP_LANE_SEQ_FAILED = 1u << 2, /* with SEQ_END: the sequence was cut short by an error (its
                                        file failed mid-way); writers mark what they wrote as partial */
};

/* Per-lane metadata of a block. The host copies it from an element's input
 * to its output; a layer updates only `len` and `pts`. */
typedef struct clapp_lane {
    int64_t        seq_id;      /* running number of the stream in this run; -1: lane idle */
    const char    *seq_name;    /* stable key of the stream (manifest entry), for writers */
    uint32_t       flags;       /* CLAPP_LANE_* */
    int32_t        len;         /* valid time steps of this lane in the block (0..T) */
    int64_t        pts;         /* index, at the block's rate, of the first valid step in its sequence */
    int32_t        class_label; /* sequence-level class id, -1 if none */
    const int32_t *labels;      /* frame labels at label_rate covering this block's span, or NULL */
    int32_t        n_labels;
    int64_t        label_pts;   /* index, at label_rate, of labels[0] in the sequence */
} clapp_lane;

/* A block. x is [B, C, T] for audio-like streams, [B, C, T, H, W] for video.
 * T is the capacity; steps t >= lane[b].len hold zeros and must be ignored. */
typedef struct clapp_block {
    clapp_tensor x;
    int32_t      lanes;       /* B == x.shape[0] */
    clapp_lane  *lane;        /* [lanes] */
    double       rate;        /* time steps per second at this point of the graph */
    double       label_rate;  /* rate of lane[].labels (labels per second), 0 if none */
} clapp_block;

/* What an element produces, negotiated once before streaming (configure). */
typedef struct clapp_stream_info {
    int32_t ndim;                     /* 3: [B, C, T]; 5: [B, C, T, H, W] */
    int64_t shape[CLAPP_MAX_DIMS];    /* shape[2] is the time capacity of one block */
    double  rate;                     /* time steps per second */
} clapp_stream_info;

#ifdef __cplusplus
}
#endif
#endif /* CLAPP_TENSOR_H */
