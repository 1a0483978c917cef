/* clapp core — the `clapp` loss element (loss_clapp.c): its parameter table
 * and its loss form (learning/loss_form.h) over the two implementations of
 * the contrastive loss, flat (learning/loss.h: one vector per step) and video
 * (learning/loss_video.h: [B, C, T, H, W] streams), chosen by form=.
 */
#ifndef CLAPP_CORE_LOSS_CLAPP_H
#define CLAPP_CORE_LOSS_CLAPP_H

#include "learning/loss.h"
#include "learning/loss_form.h"
#include "learning/loss_video.h"

extern const clapp_loss_form clapp_loss_form_clapp;

/* For tools and tests: the parts of a `clapp` element's instance (`self` of
 * clapp_loss_form_clapp; NULL when `form` is another form or the instance
 * uses the other implementation). */
clapp_loss              *clapp_loss_clapp_flat(const clapp_loss_form *form, void *self);
clapp_loss_video        *clapp_loss_clapp_video(const clapp_loss_form *form, void *self);
const clapp_loss_params *clapp_loss_clapp_params(const clapp_loss_form *form, const void *self);

#endif
