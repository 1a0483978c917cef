/* affine — the plugin template: a minimal clapp layer, y = a_c * x + b_c per
 * channel c, with its local backward. Copy this folder, rename the element,
 * and replace the arithmetic; the rest (parameters, tensors, lifecycle) is
 * what every layer needs. Builds against the installed headers only:
 *     cmake -S . -B build -DCMAKE_PREFIX_PATH=<clapp prefix> && cmake --build build
 *
 * Contract reminders (include/clapp/plugin.h): no global mutable state; all
 * memory sized in configure, none allocated in forward/backward; backward
 * ADDS into gradients; errors are negative CLAPP_E_* with a log line. */
#include <stdlib.h>
#include <string.h>

#include <clapp/plugin.h>
#include <clapp/plugin_util.h>

typedef struct affine {
    const clapp_host  *host;
    char               name[64];
    double             scale, shift;      /* initial a and b */
    clapp_stream_info  in;
    clapp_tensor       a, b, ga, gb;      /* [C] each */
    clapp_named_tensor list[2];
    clapp_tensor       x;                 /* the last input, kept for backward */
    int32_t           *len;               /* [B] valid steps of the last input */
    int                have_x;
} affine;

static const clapp_param_desc affine_params[] = {
    {"scale", CLAPP_PARAM_FLOAT, "1", -1e6, 1e6, NULL, "initial slope a of every channel"},
    {"shift", CLAPP_PARAM_FLOAT, "0", -1e6, 1e6, NULL, "initial offset b of every channel"},
};
#define AFFINE_N_PARAMS ((int32_t)(sizeof affine_params / sizeof affine_params[0]))

/* Where create() puts each parameter: its default is the table's alone. */
static const clapp_param_field affine_fields[] = {
    CLAPP_FIELD(affine, scale),
    CLAPP_FIELD(affine, shift),
};

static void affine_destroy(void *self)
{
    affine *m = self;
    if (!m)
        return;
    clapp_tensor_free(&m->a);
    clapp_tensor_free(&m->b);
    clapp_tensor_free(&m->ga);
    clapp_tensor_free(&m->gb);
    clapp_tensor_free(&m->x);
    free(m->len);
    free(m);
}

static int affine_create(const clapp_create_info *info, void **self)
{
    affine *m = calloc(1, sizeof *m);
    *self = m;
    if (!m)
        return CLAPP_E_NOMEM;
    m->host = info->host;
    strncpy(m->name, info->instance_name ? info->instance_name : "affine", sizeof m->name - 1);
    /* Deterministic init: nothing random here, so info->seed is unused
     * (a layer that draws would seed clapp_splitmix64 with it). */
    return clapp_params_bind(info, affine_params, AFFINE_N_PARAMS, affine_fields,
                             (int32_t)(sizeof affine_fields / sizeof affine_fields[0]), m);
}

/* Steps per (lane, channel) row and floats per step: [B, C, T] or [B, C, T, H, W]. */
static int64_t plane(const clapp_stream_info *s) { return s->ndim == 5 ? s->shape[3] * s->shape[4] : 1; }

static int affine_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    affine *m = self;
    int64_t c;
    if ((in->ndim != 3 && in->ndim != 5) || in->shape[0] < 1 || in->shape[1] < 1 || in->shape[2] < 1) {
        clapp_host_log(m->host, CLAPP_LOG_ERROR, m->name, "affine: takes [B, C, T] or [B, C, T, H, W], got %d dims",
                       in->ndim);
        return CLAPP_E_SHAPE;
    }
    c = in->shape[1];
    /* Re-negotiation: keep learned values if the channel count is unchanged. */
    if (!m->a.data || m->a.shape[0] != c) {
        clapp_tensor_free(&m->a);
        clapp_tensor_free(&m->b);
        clapp_tensor_free(&m->ga);
        clapp_tensor_free(&m->gb);
        if (clapp_tensor_alloc_shape(&m->a, 1, &c) || clapp_tensor_alloc_shape(&m->b, 1, &c) ||
            clapp_tensor_alloc_shape(&m->ga, 1, &c) || clapp_tensor_alloc_shape(&m->gb, 1, &c))
            return CLAPP_E_NOMEM;
        for (int64_t i = 0; i < c; i++) {
            m->a.data[i] = (float)m->scale;
            m->b.data[i] = (float)m->shift;
        }
    }
    clapp_tensor_free(&m->x);
    free(m->len);
    m->len = calloc((size_t)in->shape[0], sizeof *m->len);
    if (!m->len || clapp_tensor_alloc_shape(&m->x, in->ndim, in->shape))
        return CLAPP_E_NOMEM;
    m->list[0] = (clapp_named_tensor){"a", &m->a, &m->ga};
    m->list[1] = (clapp_named_tensor){"b", &m->b, &m->gb};
    m->in = *in;
    m->have_x = 0;
    *out = *in;   /* same shape and rate */
    return CLAPP_OK;
}

static int affine_forward(void *self, const clapp_block *in, clapp_block *out)
{
    affine *m = self;
    const int64_t C = m->in.shape[1], T = m->in.shape[2], P = plane(&m->in);
    for (int32_t b = 0; b < in->lanes; b++) {
        int64_t n = (int64_t)in->lane[b].len * P;
        for (int64_t c = 0; c < C; c++) {
            const float *x = in->x.data + (b * C + c) * T * P;
            float *y = out->x.data + (b * C + c) * T * P;
            for (int64_t i = 0; i < n; i++)   /* steps past len stay zero (host-zeroed) */
                y[i] = m->a.data[c] * x[i] + m->b.data[c];
        }
        out->lane[b].len = in->lane[b].len;
        out->lane[b].pts = in->lane[b].pts;
        m->len[b] = in->lane[b].len;
    }
    memcpy(m->x.data, in->x.data, (size_t)clapp_tensor_numel(&m->x) * sizeof(float));
    m->have_x = 1;
    return CLAPP_OK;
}

static int affine_backward(void *self, const clapp_tensor *grad_out, clapp_tensor *grad_in)
{
    affine *m = self;
    const int64_t B = m->in.shape[0], C = m->in.shape[1], T = m->in.shape[2], P = plane(&m->in);
    if (!m->have_x) {
        clapp_host_log(m->host, CLAPP_LOG_ERROR, m->name, "affine: backward before forward");
        return CLAPP_E_STATE;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            const float *g = grad_out->data + (b * C + c) * T * P, *x = m->x.data + (b * C + c) * T * P;
            double sa = 0, sb = 0;
            for (int64_t i = 0; i < (int64_t)m->len[b] * P; i++) {
                sa += (double)g[i] * x[i];
                sb += g[i];
                if (grad_in)
                    grad_in->data[(b * C + c) * T * P + i] += m->a.data[c] * g[i];
            }
            m->ga.data[c] += (float)sa;
            m->gb.data[c] += (float)sb;
        }
    return CLAPP_OK;
}

static int affine_reset(void *self, int32_t lane)
{
    (void)self;   /* no streaming state: every step is independent */
    (void)lane;
    return CLAPP_OK;
}

static int affine_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    affine *m = self;
    *list = m->list;
    *count = 2;
    return CLAPP_OK;
}

static const clapp_plugin_desc affine_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "affine",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "template layer: y = a * x + b per channel (learned a, b)",
    .params = affine_params,
    .n_params = AFFINE_N_PARAMS,
    .create = affine_create,
    .destroy = affine_destroy,
    .configure = affine_configure,
    .forward = affine_forward,
    .backward = affine_backward,
    .reset = affine_reset,
    .tensors = affine_tensors,
};

CLAPP_PLUGIN_ENTRY(&affine_desc);
