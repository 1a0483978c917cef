/* clapp core — optimizers over the named tensors that elements expose.
 *
 * Adam (decoupled from nothing: weight decay is added to the gradient, as
 * torch.optim.Adam's weight_decay) and SGD with optional momentum. Each
 * tensor has its own learning rate (the element's lr=). step() applies the
 * update to every tensor and zeroes its gradient.
 */
#ifndef CLAPP_CORE_OPTIM_H
#define CLAPP_CORE_OPTIM_H

#include <stdint.h>

#include "clapp/plugin.h"

typedef enum clapp_optim_type { CLAPP_OPTIM_ADAM = 0, CLAPP_OPTIM_SGD = 1 } clapp_optim_type;

typedef struct clapp_optim_params {
    clapp_optim_type type;
    double lr;            /* default for tensors added with lr < 0 */
    double beta1, beta2;  /* Adam */
    double eps;           /* Adam */
    double weight_decay;  /* L2 added to the gradient */
    double momentum;      /* SGD */
} clapp_optim_params;

void clapp_optim_default_params(clapp_optim_params *p);   /* Adam 2e-4, (0.9, 0.999), 1e-8 */

typedef struct clapp_optim_slot {
    char         *name;     /* "element.param" */
    clapp_tensor *value;
    clapp_tensor *grad;
    clapp_tensor  m, v;     /* Adam moments / SGD momentum in m */
    double        lr;
} clapp_optim_slot;

typedef struct clapp_optim {
    clapp_optim_params p;
    clapp_optim_slot  *slots;
    int32_t            n, cap;
    int64_t            t;   /* steps taken */
} clapp_optim;

int  clapp_optim_init(clapp_optim *o, const clapp_optim_params *p);
/* Add one tensor (value and grad must be non-NULL). lr < 0: the default. */
int  clapp_optim_add(clapp_optim *o, const char *element, const clapp_named_tensor *t, double lr);
/* Update every tensor from its gradient, then zero the gradients. */
void clapp_optim_step(clapp_optim *o);
/* Zero every gradient without stepping. */
void clapp_optim_zero_grad(clapp_optim *o);
void clapp_optim_free(clapp_optim *o);

#endif
