/* clapp core — optimizers over the named tensors that elements expose.
 *
 * Adam and SGD with optional momentum. Weight decay is either added to the
 * gradient (torch.optim.Adam's weight_decay) or decoupled (torch.optim.AdamW:
 * w -= lr * wd * w). Each tensor has its own learning rate (the element's
 * lr=). step() applies the update to every tensor and zeroes its gradient.
 *
 * Remedies for early collapse, all off by default so the paper's setting
 * stays the reference: a linear learning-rate warmup, and gradient-norm
 * clipping per element (the tensors added under one element name form a
 * group whose joint L2 norm is clipped).
 */
#ifndef CLAPP_CORE_OPTIM_H
#define CLAPP_CORE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"

typedef enum clapp_optim_type { CLAPP_OPTIM_ADAM = 0, CLAPP_OPTIM_SGD = 1 } clapp_optim_type;

typedef struct clapp_optim_params {
    clapp_optim_type type;
    double lr;            /* default for tensors added with lr < 0 */
    double beta1, beta2;  /* Adam */
    double eps;           /* Adam */
    double weight_decay;  /* L2 added to the gradient, or decoupled (below) */
    int    decoupled_wd;  /* 1: w -= lr * weight_decay * w (AdamW), not through the gradient */
    double momentum;      /* SGD */
    int64_t warmup;       /* step k <= warmup uses lr * k / warmup (k from 1); 0: off */
    double clip;          /* per element: scale its gradients to a joint L2 norm <= clip; 0: off */
} clapp_optim_params;

void clapp_optim_default_params(clapp_optim_params *p);   /* Adam 2e-4, (0.9, 0.999), 1e-8 */
/* 0, or CLAPP_E_INVAL with err naming the setting and the allowed range. */
int  clapp_optim_check_params(const clapp_optim_params *p, char *err, size_t errlen);

typedef struct clapp_optim_slot {
    char         *name;     /* "element.param" */
    clapp_tensor *value;
    clapp_tensor *grad;
    clapp_tensor  m, v;     /* Adam moments / SGD momentum in m */
    double        lr;
    int32_t       group;    /* slots of one element share a group (clipping) */
    /* Filled by step() when clapp_optim.record is set: */
    double        grad_norm;    /* L2 norm of the gradient, before clipping */
    double        update_norm;  /* L2 norm of the change of the values (as stored) */
    double        value_norm;   /* L2 norm of the values after the step */
} clapp_optim_slot;

typedef struct clapp_optim {
    clapp_optim_params p;
    clapp_optim_slot  *slots;
    int32_t            n, cap;
    int64_t            t;       /* steps taken */
    int                record;  /* the next step() fills the slots' norms (diagnostics) */
} clapp_optim;

/* CLAPP_E_INVAL for parameters clapp_optim_check_params refuses. */
int  clapp_optim_init(clapp_optim *o, const clapp_optim_params *p);
/* Add one tensor (value and grad must be non-NULL). lr < 0: the default.
 * Consecutive tensors of the same element form one clipping group. */
int  clapp_optim_add(clapp_optim *o, const char *element, const clapp_named_tensor *t, double lr);
/* Update every tensor from its gradient, then zero the gradients. */
void clapp_optim_step(clapp_optim *o);
/* The factor on every learning rate at step t (1-based): the warmup ramp. */
double clapp_optim_lr_scale(const clapp_optim_params *p, int64_t t);
/* Zero every gradient without stepping. */
void clapp_optim_zero_grad(clapp_optim *o);
void clapp_optim_free(clapp_optim *o);

#endif
