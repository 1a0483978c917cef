/* clapp core — the one interface every loss element implements (loss_form.c).
 *
 * A loss element reads the stream of the layer before it (the context c) and
 * possibly another layer's stream (the target z: target=, or the own layer
 * with context=, direct feedback), computes a loss on each block and adds its
 * gradient into the modules' gradient tensors. The graph resolves where c and
 * z come from and runs the modules' backward; the loss form decides
 * everything else: its parameters, its tensors, what it draws, and what a
 * checkpoint keeps besides its tensors.
 *
 * Adding a loss: write its form (a clapp_loss_form with its element
 * descriptor) in core/learning/ and list it in clapp_loss_forms
 * (loss_form.c). The registry, the graph and checkpoints find it there; none
 * of them names a loss.
 */
#ifndef CLAPP_CORE_LOSS_FORM_H
#define CLAPP_CORE_LOSS_FORM_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"
#include "graph/pipeline.h"
#include "learning/loss.h"

/* What a form is created from. */
typedef struct clapp_loss_setup {
    const clapp_pipe_elem   *pe;        /* the element: type, name, values (table order), raw kv */
    const clapp_stream_info *z;         /* the target stream (the context stream without target=) */
    const clapp_stream_info *c;         /* the context stream */
    int                      target;    /* target= names a layer: z is its output */
    int                      target_in_module;   /* ... and it lies in the context's module */
    int                      feedback;  /* context=: z is the own layer, c the context layer (detached) */
    uint64_t                 seed;      /* the element's seed */
    const clapp_host        *host;
} clapp_loss_setup;

typedef struct clapp_loss_form {
    /* The element as the registry lists it (kind CLAPP_KIND_LOSS, parameter
     * table; no function pointers). */
    const clapp_plugin_desc *desc;
    /* 0 or a negative CLAPP_E_* with err = "TYPE 'NAME': why". */
    int  (*create)(void **self, const clapp_loss_setup *s, char *err, size_t errlen);
    void (*destroy)(void *self);
    /* The learned tensors, with gradients, valid until destroy. */
    int  (*tensors)(void *self, const clapp_named_tensor **list, int32_t *count);
    /* One block: z and c as in clapp_loss_setup (the same block without a
     * target). grad_z, grad_c: where dL/dz and dL/dc are ADDED (NULL: none;
     * the same tensor when z is c). */
    int  (*compute)(void *self, const clapp_block *z, const clapp_block *c, clapp_tensor *grad_z,
                    clapp_tensor *grad_c, clapp_loss_stats *st);
    /* Optional (NULL: never): whether the target layer gets dL/dz. */
    int  (*grad_target)(const void *self);
    /* Optional (NULL: the form draws nothing per block): the PRNG state a
     * checkpoint keeps; get returns 1 when this instance has one, else 0. */
    int  (*get_rng)(const void *self, uint64_t state[4]);
    void (*set_rng)(void *self, const uint64_t state[4]);
    /* Optional (NULL: every loss version behaves alike): make this instance
     * behave as loss version `version` (< CLAPP_LOSS_VERSION) for a
     * checkpoint made then; check_only: only say whether it can. 0 or a
     * negative CLAPP_E_* with why (no path, no trailing period). */
    int  (*loss_version)(void *self, int version, int check_only, char *why, size_t whylen);
} clapp_loss_form;

/* Every loss form, NULL-terminated. */
extern const clapp_loss_form *const clapp_loss_forms[];

/* The form whose element id is `id`, or NULL. */
const clapp_loss_form *clapp_loss_form_find(const char *id);

#endif
