/* clapp core — the supervised loss element `supervised`: the paper's
 * reference algorithms (appendix: "supervised" and "greedy supervised").
 *
 * A linear classifier (weight [classes, D], bias [classes]; PyTorch Linear
 * initialisation U(±1/sqrt(D)) from the element's seed) reads the module
 * output x and is trained by softmax cross-entropy on the labels the probes
 * read. Its tensors carry gradients, so the host's optimizer updates them
 * like W_k and checkpoints save them; the gradient with respect to x flows
 * into the module below like any loss element's. One element at the top of a
 * single module trains the encoder end to end (supervised); one after every
 * layer trains each layer with its own classifier (greedy supervised).
 *
 * The features of a time step are D = C values ([B, C, T] streams) or
 * D = C*H*W values ([B, C, T, H, W], flattened channel-major: c*H*W + y*W + x,
 * as probe_action).
 *
 * labels=frames (phones): valid step t of lane b at the block rate r gets the
 * label of the time (pts + t + 0.5) / r, i.e. labels[i] with
 * i = floor((pts + t + 0.5) * label_rate / r) - label_pts, exactly as
 * probe_phoneme reads it; steps without a label (idle lane, no labels, i out
 * of range, label < 0) are skipped. L = mean over the block's labelled steps
 * of -log softmax(W x_t + b)[label].
 *
 * labels=class (clips): each lane with valid steps and class_label >= 0 gives
 * one row, the time average of its valid steps in this block (probe_action
 * averages the whole clip; in window mode a block holds one window of each
 * clip, so the two agree); L = mean over those lanes of the cross-entropy.
 * The gradient of a lane's row is spread evenly over its valid steps.
 *
 * A label >= classes is an error naming the element, the sequence and
 * classes=. A block without any labelled row gives loss 0, pairs 0 and no
 * gradient. stats: loss, pairs = labelled rows; pos_active / neg_active 0.
 */
#ifndef CLAPP_CORE_LOSS_SUPERVISED_H
#define CLAPP_CORE_LOSS_SUPERVISED_H

#include <stdint.h>

#include "clapp/plugin.h"
#include "learning/loss.h"
#include "learning/loss_form.h"

typedef enum clapp_sup_labels {
    CLAPP_SUP_FRAMES = 0,   /* lane.labels at label_rate, one row per labelled step */
    CLAPP_SUP_CLASS = 1,    /* lane.class_label, one row per lane: the time average */
} clapp_sup_labels;

typedef struct clapp_sup_params {
    int64_t          classes;
    clapp_sup_labels labels;
    uint64_t         seed;
} clapp_sup_params;

typedef struct clapp_loss_supervised clapp_loss_supervised;

/* in: the stream the element reads ([B, C, T] or [B, C, T, H, W]). Work
 * buffers (about (classes + 2 D) T floats per block) are allocated here. */
int  clapp_loss_supervised_create(clapp_loss_supervised **loss, const clapp_sup_params *p,
                                  const clapp_stream_info *in, const clapp_host *host,
                                  const char *name);

/* One block. grad (may be NULL: no input gradient) has the block's shape;
 * dL/dx is ADDED at valid steps; the classifier's gradients are ACCUMULATED
 * into the tensors' grads (zero them per optimizer step). */
int  clapp_loss_supervised_compute(clapp_loss_supervised *loss, const clapp_block *x,
                                   clapp_tensor *grad, clapp_loss_stats *st);

/* "weight" [classes, D] and "bias" [classes], with gradients. */
int  clapp_loss_supervised_tensors(clapp_loss_supervised *loss, const clapp_named_tensor **list,
                                   int32_t *count);

/* The last compute: labelled rows and how many the classifier got right
 * (argmax, before the update: training accuracy). label_of, for tests: the
 * label each row used: frames [B * T] (index b * T + t, -1 = skipped),
 * class [B] (-1 = skipped). Valid until the next compute. */
void clapp_loss_supervised_last(const clapp_loss_supervised *loss, int64_t *rows, int64_t *correct,
                                const int32_t **label_of);

void clapp_loss_supervised_destroy(clapp_loss_supervised *loss);

/* The `supervised` element's loss form (learning/loss_form.h); its
 * instances are clapp_loss_supervised. */
extern const clapp_loss_form clapp_loss_form_supervised;
/* For tools and tests: the classifier of an instance of that form (NULL for
 * another form). */
clapp_loss_supervised *clapp_loss_supervised_of(const clapp_loss_form *form, void *self);

#endif
