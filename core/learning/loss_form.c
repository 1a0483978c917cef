/* The table of loss forms (loss_form.h). */
#include <string.h>

#include "learning/loss_form.h"
#include "learning/loss_clapp.h"
#include "learning/loss_supervised.h"

const clapp_loss_form *const clapp_loss_forms[] = {
    &clapp_loss_form_clapp,
    &clapp_loss_form_supervised,
    NULL,
};

const clapp_loss_form *clapp_loss_form_find(const char *id)
{
    for (int i = 0; id && clapp_loss_forms[i]; i++)
        if (strcmp(clapp_loss_forms[i]->desc->id, id) == 0)
            return clapp_loss_forms[i];
    return NULL;
}
