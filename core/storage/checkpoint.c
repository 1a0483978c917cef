/* Safetensors checkpoints of a graph. */
#define _GNU_SOURCE
#include "storage/checkpoint.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT "clapp-checkpoint-1"
#define CKPT_MAX_HEADER (64u << 20)   /* a header larger than this is corrupt */

/* One tensor to write or to fill. */
typedef struct ckpt_item {
    char         *name;
    clapp_tensor *t;
    int           optional;   /* sinks' tensors (probes): a checkpoint from training lacks them */
} ckpt_item;

typedef struct ckpt_list {
    ckpt_item *items;
    int        n, cap;
} ckpt_list;

static int list_add(ckpt_list *l, clapp_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int list_add(ckpt_list *l, clapp_tensor *t, const char *fmt, ...)
{
    va_list ap;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        ckpt_item *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items)
            return CLAPP_E_NOMEM;
        l->items = items;
        l->cap = cap;
    }
    va_start(ap, fmt);
    if (vasprintf(&l->items[l->n].name, fmt, ap) < 0) {
        va_end(ap);
        return CLAPP_E_NOMEM;
    }
    va_end(ap);
    l->items[l->n].t = t;
    l->items[l->n].optional = 0;
    l->n++;
    return CLAPP_OK;
}

static void list_free(ckpt_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->items[i].name);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Every tensor of the graph, in graph order, then the optimizer moments. */
static int collect(const clapp_graph *g, int with_optimizer, ckpt_list *l)
{
    int rc;
    for (int i = 1; i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        for (int32_t t = 0; t < nd->n_tensors; t++) {
            if ((rc = list_add(l, nd->tensors[t].value, "%s.%s", nd->pe->name, nd->tensors[t].name)) < 0)
                return rc;
            l->items[l->n - 1].optional = nd->kind == CLAPP_KIND_SINK;
        }
    }
    if (!with_optimizer)
        return CLAPP_OK;
    for (int32_t s = 0; s < g->optim.n; s++) {
        clapp_optim_slot *slot = &g->optim.slots[s];
        if ((rc = list_add(l, &slot->m, "__optim__.%s.m", slot->name)) < 0)
            return rc;
        if (slot->v.data && (rc = list_add(l, &slot->v, "__optim__.%s.v", slot->name)) < 0)
            return rc;
    }
    return CLAPP_OK;
}

/* The checksum of a tensor's data: FNV-1a, 64 bits, over its bytes as
 * stored (little-endian float32). Each step is a bijection of the state, so
 * any change of one byte changes the result. */
static uint64_t data_checksum(const void *data, size_t n)
{
    const unsigned char *b = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Metadata "checksums": {"TENSOR": "fnv1a64:HEX", ...} as JSON text. */
static char *checksums_json(const ckpt_list *l)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL, hex[40];
    for (int i = 0; root && i < l->n; i++) {
        const clapp_tensor *t = l->items[i].t;
        snprintf(hex, sizeof hex, "fnv1a64:%016llx", (unsigned long long)data_checksum(
                 t->data, (size_t)clapp_tensor_numel(t) * sizeof(float)));
        if (!cJSON_AddStringToObject(root, l->items[i].name, hex))
            break;
    }
    if (root)
        text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static cJSON *elements_json(const clapp_graph *g)
{
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; root && i < g->n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, g->nodes[i].pe->name);
        if (!e)
            continue;
        cJSON_AddStringToObject(e, "id", g->nodes[i].desc->id);
        cJSON_AddStringToObject(e, "version", g->nodes[i].desc->version ? g->nodes[i].desc->version : "");
    }
    return root;
}

/* The PRNG state of a loss element that keeps one: 1 and st, else 0. */
static int node_rng(const clapp_node *nd, uint64_t st[4])
{
    return nd->kind == CLAPP_KIND_LOSS && nd->loss_form && nd->loss_form->get_rng &&
           nd->loss_form->get_rng(nd->loss_self, st);
}

/* The loss elements' PRNG states as one JSON text: {"clapp0": "hex hex hex hex"}
 * (16 hex digits per word: JSON numbers cannot hold 64 bits exactly). */
static char *rng_json(const clapp_graph *g)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    for (int i = 1; root && i < g->n; i++) {
        uint64_t st[4];
        char buf[80];
        if (!node_rng(&g->nodes[i], st))
            continue;
        snprintf(buf, sizeof buf, "%016llx %016llx %016llx %016llx", (unsigned long long)st[0],
                 (unsigned long long)st[1], (unsigned long long)st[2], (unsigned long long)st[3]);
        cJSON_AddStringToObject(root, g->nodes[i].pe->name, buf);
    }
    if (root)
        text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

/* Parse the "rng" metadata into states[] (one per node; have[i] set where
 * present). A malformed entry is corruption. */
static int rng_parse(const char *text, const clapp_graph *g, uint64_t (*states)[4], char *have,
                     const char *path, char *err, size_t errlen)
{
    cJSON *root = cJSON_Parse(text);
    int rc = CLAPP_OK;
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: corrupt 'rng' metadata (not a JSON object)", path);
        rc = CLAPP_E_FORMAT;
        goto done;
    }
    for (int i = 1; i < g->n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, g->nodes[i].pe->name);
        unsigned long long w[4];
        uint64_t st[4];
        int used = 0;
        if (!node_rng(&g->nodes[i], st) || !v)
            continue;
        if (!cJSON_IsString(v) || sscanf(v->valuestring, "%16llx %16llx %16llx %16llx%n", &w[0], &w[1],
                                         &w[2], &w[3], &used) != 4 || v->valuestring[used]) {
            snprintf(err, errlen, "%s: corrupt 'rng' metadata of element '%s'", path, g->nodes[i].pe->name);
            rc = CLAPP_E_FORMAT;
            goto done;
        }
        for (int k = 0; k < 4; k++)
            states[i][k] = (uint64_t)w[k];
        have[i] = 1;
    }
done:
    cJSON_Delete(root);
    return rc;
}

/* The optimizer settings as one JSON text, so that a run can be repeated
 * (and resumed) from its checkpoint alone. cJSON prints doubles so that they
 * parse back to the same value. */
static char *optim_json(const clapp_optim_params *p)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (root) {
        cJSON_AddStringToObject(root, "type", p->type == CLAPP_OPTIM_SGD ? "sgd" : "adam");
        cJSON_AddNumberToObject(root, "lr", p->lr);
        cJSON_AddNumberToObject(root, "beta1", p->beta1);
        cJSON_AddNumberToObject(root, "beta2", p->beta2);
        cJSON_AddNumberToObject(root, "eps", p->eps);
        cJSON_AddNumberToObject(root, "weight_decay", p->weight_decay);
        cJSON_AddBoolToObject(root, "decoupled_wd", p->decoupled_wd != 0);
        cJSON_AddNumberToObject(root, "momentum", p->momentum);
        cJSON_AddNumberToObject(root, "warmup", (double)p->warmup);
        cJSON_AddNumberToObject(root, "clip", p->clip);
        text = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(root);
    return text;
}

/* The shortest %g text that reads back as v. */
static void shortest_g(char *buf, size_t cap, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* Resume: the optimizer settings must be the ones the checkpoint was trained
 * with, or the resumed run is not the uninterrupted one. Each setting is
 * named by the train option that sets it. Checkpoints without 'optim'
 * metadata (older ones) are not checked. */
static int check_optim(const char *text, const clapp_optim_params *p, const char *path, char *err,
                       size_t errlen)
{
    const struct { const char *key, *option; double now; } num[] = {
        {"lr", "--lr", p->lr},
        {"beta1", "--adam-beta1", p->beta1},
        {"beta2", "--adam-beta2", p->beta2},
        {"eps", "--adam-eps", p->eps},
        {"weight_decay", "--weight-decay", p->weight_decay},
        {"momentum", "the SGD momentum", p->momentum},
        {"warmup", "--warmup", (double)p->warmup},
        {"clip", "--clip", p->clip},
    };
    cJSON *root = cJSON_Parse(text);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const cJSON *dwd = cJSON_GetObjectItemCaseSensitive(root, "decoupled_wd");
    const char *now_type = p->type == CLAPP_OPTIM_SGD ? "sgd" : "adam";
    int rc = CLAPP_OK;

    if (!cJSON_IsObject(root) || !cJSON_IsString(type) || !cJSON_IsBool(dwd)) {
        snprintf(err, errlen, "%s: corrupt 'optim' metadata", path);
        rc = CLAPP_E_FORMAT;
        goto done;
    }
    if (strcmp(type->valuestring, now_type) != 0) {
        snprintf(err, errlen, "%s was trained with the %s optimizer, this run uses %s; resume with "
                 "the same optimizer settings", path, type->valuestring, now_type);
        rc = CLAPP_E_INVAL;
        goto done;
    }
    for (size_t k = 0; k < sizeof num / sizeof num[0]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, num[k].key);
        if (!cJSON_IsNumber(v)) {
            snprintf(err, errlen, "%s: corrupt 'optim' metadata (no number '%s')", path, num[k].key);
            rc = CLAPP_E_FORMAT;
            goto done;
        }
        if (v->valuedouble != num[k].now) {
            char was[32], now[32];
            shortest_g(was, sizeof was, v->valuedouble);
            shortest_g(now, sizeof now, num[k].now);
            snprintf(err, errlen, "%s was trained with %s %s, this run has %s; resume with the "
                     "same optimizer settings", path, num[k].option, was, now);
            rc = CLAPP_E_INVAL;
            goto done;
        }
    }
    /* The kind of weight decay matters only when there is some. */
    if (p->weight_decay > 0 && cJSON_IsTrue(dwd) != (p->decoupled_wd != 0)) {
        snprintf(err, errlen, "%s was trained with %s weight decay, this run uses %s; resume with "
                 "the same optimizer settings", path, cJSON_IsTrue(dwd) ? "decoupled" : "L2",
                 p->decoupled_wd ? "decoupled" : "L2");
        rc = CLAPP_E_INVAL;
    }
done:
    cJSON_Delete(root);
    return rc;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Remove the temporary files of earlier saves to `path` that were killed
 * mid-write (PATH.tmp.XXXXXX). A save in progress holds an exclusive flock
 * on its temporary file, so only those whose writer is gone are removed. */
static void remove_stale_temps(const char *path)
{
    char *dircopy = strdup(path), *basecopy = strdup(path), *dir, *base, *full = NULL;
    size_t bl;
    DIR *d = NULL;
    struct dirent *de;
    if (!dircopy || !basecopy)
        goto done;
    dir = dirname(dircopy);
    base = basename(basecopy);
    bl = strlen(base);
    if (!(d = opendir(dir)))
        goto done;
    while ((de = readdir(d))) {
        int fd;
        if (strncmp(de->d_name, base, bl) != 0 || strncmp(de->d_name + bl, ".tmp.", 5) != 0 ||
            strlen(de->d_name + bl + 5) != 6)
            continue;
        free(full);
        if (asprintf(&full, "%s/%s", dir, de->d_name) < 0) {
            full = NULL;
            break;
        }
        if ((fd = open(full, O_RDONLY | O_NOFOLLOW)) < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlink(full);
        close(fd);
    }
done:
    if (d)
        closedir(d);
    free(full);
    free(dircopy);
    free(basecopy);
}

int clapp_ckpt_save(const clapp_graph *g, const char *path,
                          const clapp_ckpt_options *opt, char *err, size_t errlen)
{
    ckpt_list l = {0};
    cJSON *hdr = NULL, *meta, *elems = NULL;
    char *json = NULL, *tmp = NULL, *pipeline = NULL, *elems_text = NULL, *dircopy = NULL;
    char *rng_text = NULL, *optim_text = NULL, *sums_text = NULL;
    char num[32];
    int fd = -1, rc = CLAPP_OK, dfd;
    uint64_t offset = 0, hlen, padded;

    if ((rc = collect(g, opt && opt->with_optimizer, &l)) < 0)
        goto done;
    hdr = cJSON_CreateObject();
    meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    pipeline = clapp_pipedesc_to_text(g->pd);
    elems = elements_json(g);
    elems_text = elems ? cJSON_PrintUnformatted(elems) : NULL;
    if (!hdr || !meta || !pipeline || !elems_text) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    cJSON_AddStringToObject(meta, "format", CKPT_FORMAT);
    cJSON_AddStringToObject(meta, "pipeline", pipeline);
    cJSON_AddStringToObject(meta, "elements", elems_text);
    snprintf(num, sizeof num, "%lld", (long long)g->blocks);
    cJSON_AddStringToObject(meta, "blocks", num);
    snprintf(num, sizeof num, "%lld", (long long)g->optim.t);
    cJSON_AddStringToObject(meta, "optim_step", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)g->p.seed);
    cJSON_AddStringToObject(meta, "seed", num);
    snprintf(num, sizeof num, "%d", g->loss_version);
    cJSON_AddStringToObject(meta, "loss_version", num);
    if (g->p.shards > 1) {   /* data-parallel: a resume needs as many processes */
        snprintf(num, sizeof num, "%d", g->p.shards);
        cJSON_AddStringToObject(meta, "shards", num);
    }
    rng_text = rng_json(g);
    if (!rng_text) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    cJSON_AddStringToObject(meta, "rng", rng_text);
    optim_text = optim_json(&g->optim.p);
    if (!optim_text) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    cJSON_AddStringToObject(meta, "optim", optim_text);
    sums_text = checksums_json(&l);
    if (!sums_text) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    cJSON_AddStringToObject(meta, "checksums", sums_text);
    for (int i = 0; i < l.n; i++) {
        const clapp_tensor *t = l.items[i].t;
        cJSON *e = cJSON_AddObjectToObject(hdr, l.items[i].name);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        uint64_t bytes = (uint64_t)clapp_tensor_numel(t) * sizeof(float);
        cJSON_AddStringToObject(e, "dtype", "F32");
        for (int32_t d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    json = cJSON_PrintUnformatted(hdr);
    if (!json) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    /* Pad the header with spaces so the data starts 8-byte aligned. */
    hlen = strlen(json);
    padded = (hlen + 7) / 8 * 8;

    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    remove_stale_temps(path);
    fd = mkstemp(tmp);
    /* mkstemp makes the file private; a checkpoint is an ordinary output file.
     * The lock tells later saves that this temporary file is being written. */
    if (fd >= 0) {
        fchmod(fd, 0644);
        flock(fd, LOCK_EX | LOCK_NB);
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create a temporary file next to it (%s)", path, strerror(errno));
        rc = CLAPP_E_IO;
        goto done;
    }
    {
        unsigned char len8[8];
        for (int b = 0; b < 8; b++)
            len8[b] = (unsigned char)(padded >> (8 * b));
        if (write_all(fd, len8, 8) < 0 || write_all(fd, json, hlen) < 0 ||
            write_all(fd, "        ", padded - hlen) < 0)
            goto io_error;
    }
    for (int i = 0; i < l.n; i++)
        if (write_all(fd, l.items[i].t->data, (size_t)clapp_tensor_numel(l.items[i].t) * sizeof(float)) < 0)
            goto io_error;
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        goto io_error;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto io_error;
    /* Make the rename itself durable. */
    dircopy = strdup(path);
    if (dircopy && (dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY)) >= 0) {
        fsync(dfd);
        close(dfd);
    }
    goto done;
io_error:
    snprintf(err, errlen, "%s: cannot write the checkpoint (%s)", path, strerror(errno));
    rc = CLAPP_E_IO;
done:
    if (fd >= 0)
        close(fd);
    if (rc < 0 && tmp)
        unlink(tmp);
    if (rc == CLAPP_E_NOMEM && err && !*err)
        snprintf(err, errlen, "%s: out of memory", path);
    free(dircopy);
    free(tmp);
    free(json);
    cJSON_free(rng_text);
    cJSON_free(optim_text);
    cJSON_free(sums_text);
    free(pipeline);
    cJSON_free(elems_text);
    cJSON_Delete(elems);
    cJSON_Delete(hdr);
    list_free(&l);
    return rc;
}

/* The parsed header of a checkpoint, after validation of its framing. */
typedef struct ckpt_file {
    FILE    *f;
    cJSON   *hdr;
    uint64_t data_start, data_size;
} ckpt_file;

static int ckpt_open(ckpt_file *cf, const char *path, char *err, size_t errlen)
{
    unsigned char len8[8];
    uint64_t hlen = 0;
    char *text = NULL;
    struct stat st;

    memset(cf, 0, sizeof *cf);
    cf->f = fopen(path, "rb");
    if (!cf->f) {
        snprintf(err, errlen, "%s: cannot open the checkpoint (%s)", path, strerror(errno));
        return CLAPP_E_IO;
    }
    if (fstat(fileno(cf->f), &st) < 0 || fread(len8, 1, 8, cf->f) != 8) {
        snprintf(err, errlen, "%s: truncated checkpoint (shorter than its 8-byte header length)", path);
        return CLAPP_E_FORMAT;
    }
    for (int b = 0; b < 8; b++)
        hlen |= (uint64_t)len8[b] << (8 * b);
    if (hlen < 2 || hlen > CKPT_MAX_HEADER || hlen > (uint64_t)st.st_size - 8) {
        snprintf(err, errlen, "%s: not a safetensors file or truncated (header length %llu, file size %lld)",
                 path, (unsigned long long)hlen, (long long)st.st_size);
        return CLAPP_E_FORMAT;
    }
    text = malloc(hlen + 1);
    if (!text)
        return CLAPP_E_NOMEM;
    if (fread(text, 1, hlen, cf->f) != hlen) {
        free(text);
        snprintf(err, errlen, "%s: truncated checkpoint header", path);
        return CLAPP_E_FORMAT;
    }
    text[hlen] = 0;
    /* Trailing garbage after the object is corruption too (padding spaces are fine). */
    cf->hdr = cJSON_ParseWithOpts(text, NULL, 1);
    free(text);
    if (!cJSON_IsObject(cf->hdr)) {
        snprintf(err, errlen, "%s: corrupt checkpoint header (not a JSON object)", path);
        return CLAPP_E_FORMAT;
    }
    cf->data_start = 8 + hlen;
    cf->data_size = (uint64_t)st.st_size - cf->data_start;
    return CLAPP_OK;
}

static void ckpt_close(ckpt_file *cf)
{
    if (cf->f)
        fclose(cf->f);
    cJSON_Delete(cf->hdr);
    memset(cf, 0, sizeof *cf);
}

static const char *meta_get(const ckpt_file *cf, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(cf->hdr, "__metadata__");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void shape_text(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int32_t d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Check one entry against the tensor it should fill; sets *begin. */
static int check_entry(const ckpt_file *cf, const char *path, const char *name, const cJSON *e,
                       const clapp_tensor *t, uint64_t *begin, char *err, size_t errlen)
{
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    int64_t dims[CLAPP_MAX_DIMS] = {0};
    int nd = cJSON_GetArraySize(shape);
    uint64_t b, end, want = (uint64_t)clapp_tensor_numel(t) * sizeof(float);
    int same = nd == t->ndim;
    char a[128], w[128];

    if (!cJSON_IsString(dtype) || strcmp(dtype->valuestring, "F32") != 0) {
        snprintf(err, errlen, "%s: tensor %s has dtype %s; clapp stores F32", path, name,
                 cJSON_IsString(dtype) ? dtype->valuestring : "(missing)");
        return CLAPP_E_FORMAT;
    }
    if (!cJSON_IsArray(shape) || nd > CLAPP_MAX_DIMS || !cJSON_IsArray(offs) ||
        cJSON_GetArraySize(offs) != 2) {
        snprintf(err, errlen, "%s: tensor %s has a malformed entry", path, name);
        return CLAPP_E_FORMAT;
    }
    for (int d = 0; d < nd; d++) {
        const cJSON *v = cJSON_GetArrayItem(shape, d);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) {
            snprintf(err, errlen, "%s: tensor %s has a malformed shape", path, name);
            return CLAPP_E_FORMAT;
        }
        dims[d] = (int64_t)v->valuedouble;
        if (d < t->ndim && dims[d] != t->shape[d])
            same = 0;
    }
    if (!same) {
        shape_text(a, sizeof a, nd, dims);
        shape_text(w, sizeof w, t->ndim, t->shape);
        snprintf(err, errlen, "%s: tensor %s has shape %s in the checkpoint but %s in the pipeline",
                 path, name, a, w);
        return CLAPP_E_SHAPE;
    }
    {
        /* Whole numbers inside the data section, checked before any
         * conversion (a double beyond 2^64 does not convert). */
        const cJSON *o0 = cJSON_GetArrayItem(offs, 0), *o1 = cJSON_GetArrayItem(offs, 1);
        double d0 = cJSON_IsNumber(o0) ? o0->valuedouble : -1, d1 = cJSON_IsNumber(o1) ? o1->valuedouble : -1;
        if (!(d0 >= 0 && d1 >= 0 && d0 < 0x1p63 && d1 < 0x1p63) || d0 != floor(d0) || d1 != floor(d1)) {
            snprintf(err, errlen, "%s: tensor %s: data_offsets are not whole numbers from 0 to 2^63 "
                     "(corrupt)", path, name);
            return CLAPP_E_FORMAT;
        }
        b = (uint64_t)d0;
        end = (uint64_t)d1;
    }
    if (end < b || end - b != want || end > cf->data_size) {
        snprintf(err, errlen, "%s: tensor %s: data [%llu, %llu) does not fit the file "
                 "(truncated or corrupt; %llu data bytes)", path, name, (unsigned long long)b,
                 (unsigned long long)end, (unsigned long long)cf->data_size);
        return CLAPP_E_FORMAT;
    }
    *begin = b;
    return CLAPP_OK;
}

/* The leading number of a "MAJOR.MINOR.PATCH" version; -1 if there is none. */
static long version_major(const char *v)
{
    long m = 0;
    int digits = 0;
    for (; *v >= '0' && *v <= '9' && digits < 9; v++, digits++)
        m = m * 10 + (*v - '0');
    return digits && (*v == '.' || !*v) ? m : -1;
}

/* An element's version in the file, as plugins are checked: the same major
 * version as the element's (its tensors' meaning may have changed across
 * majors); a newer minor is fine for data. A checkpoint without versions
 * (an empty text) loads. */
static int check_version(const cJSON *ver, const clapp_node *nd, const char *path, char *err, size_t errlen)
{
    const char *have = nd->desc->version ? nd->desc->version : "";
    long a, b;
    if (!ver)
        return CLAPP_OK;
    if (!cJSON_IsString(ver)) {
        snprintf(err, errlen, "%s: element '%s' has a malformed version in the checkpoint", path, nd->pe->name);
        return CLAPP_E_FORMAT;
    }
    if (!*ver->valuestring || !*have)
        return CLAPP_OK;
    a = version_major(ver->valuestring);
    b = version_major(have);
    if (a < 0 || a != b) {
        snprintf(err, errlen, "%s: element '%s' (%s) is version %.40s in the checkpoint but %s here; the "
                 "major versions differ", path, nd->pe->name, nd->desc->id, ver->valuestring, have);
        return CLAPP_E_ABI;
    }
    return CLAPP_OK;
}

/* Element ids recorded in the file must match the graph's. */
static int check_elements(const ckpt_file *cf, const clapp_graph *g, const char *path, char *err,
                          size_t errlen)
{
    const char *text = meta_get(cf, "elements");
    cJSON *elems = text ? cJSON_Parse(text) : NULL;
    int rc = CLAPP_OK;
    if (!elems) {
        snprintf(err, errlen, "%s: the checkpoint metadata has no valid 'elements' entry", path);
        return CLAPP_E_FORMAT;
    }
    for (int i = 1; i < g->n && rc == CLAPP_OK; i++) {
        const clapp_node *nd = &g->nodes[i];
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(elems, nd->pe->name);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (nd->n_tensors == 0 || (nd->kind == CLAPP_KIND_SINK && !e))
            continue;
        if (!cJSON_IsString(id)) {
            snprintf(err, errlen, "%s: the checkpoint has no element '%s' (%s)", path, nd->pe->name,
                     nd->desc->id);
            rc = CLAPP_E_NOTFOUND;
        } else if (strcmp(id->valuestring, nd->desc->id) != 0) {
            snprintf(err, errlen, "%s: element '%s' is a %s in the checkpoint but a %s in the pipeline",
                     path, nd->pe->name, id->valuestring, nd->desc->id);
            rc = CLAPP_E_INVAL;
        } else {
            rc = check_version(cJSON_GetObjectItemCaseSensitive(e, "version"), nd, path, err, errlen);
        }
    }
    cJSON_Delete(elems);
    return rc;
}

/* A count of the metadata ("blocks", "optim_step"): decimal digits only,
 * at most 2^53 (far beyond any run; the counters are incremented and used
 * as doubles). */
static int meta_count(const char *text, const char *key, const char *path, int64_t *out, char *err,
                      size_t errlen)
{
    int64_t v = 0;
    size_t n = strlen(text);
    int ok = n > 0 && n <= 16;
    for (size_t i = 0; ok && i < n; i++) {
        ok = text[i] >= '0' && text[i] <= '9';
        v = v * 10 + (text[i] - '0');
    }
    if (!ok || v > ((int64_t)1 << 53)) {
        snprintf(err, errlen, "%s: metadata '%s' is '%.40s'; expected a whole number from 0 to 2^53 "
                 "(corrupt checkpoint)", path, key, text);
        return CLAPP_E_FORMAT;
    }
    *out = v;
    return CLAPP_OK;
}

/* ---- loss versions ----------------------------------------------------------
 * Metadata "loss_version" records which defaults the loss elements ran with
 * (CLAPP_LOSS_VERSION; a checkpoint without it is version 1: negatives shared
 * over k, grad_target true in every mode). Loading an older version gives its
 * loss elements the old defaults for every option the pipeline leaves
 * unset, so an old run resumes as it was; the graph keeps the version and
 * saves it again. */

/* Every loss element behaves as loss version `version` (check_only: says
 * whether each can). */
static int loss_version_each(const clapp_graph *g, int version, int check_only, const char *path,
                             char *err, size_t errlen)
{
    for (int i = 1; version < CLAPP_LOSS_VERSION && i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        char why[400];
        int rc;
        if (nd->kind != CLAPP_KIND_LOSS || !nd->loss_form || !nd->loss_form->loss_version)
            continue;
        rc = nd->loss_form->loss_version(nd->loss_self, version, check_only, why, sizeof why);
        if (rc < 0) {
            snprintf(err, errlen, "%s: %s", path, why);
            return rc;
        }
    }
    return CLAPP_OK;
}

/* The version of the checkpoint, and whether the graph can take it. */
static int loss_version_check(const char *text, const clapp_graph *g, int *version,
                              const char *path, char *err, size_t errlen)
{
    char *end = NULL;
    long v = text ? strtol(text, &end, 10) : 1;
    if (text && (end == text || *end || v < 1 || v > CLAPP_LOSS_VERSION)) {
        snprintf(err, errlen, "%s: loss_version '%s' is not one this clapp knows (1..%d); it was "
                 "written by a newer clapp", path, text, CLAPP_LOSS_VERSION);
        return CLAPP_E_FORMAT;
    }
    *version = (int)v;
    return loss_version_each(g, *version, 1, path, err, errlen);
}

/* Tensor NAME's data against the file's checksum of it; sums NULL: a
 * checkpoint from before checksums, nothing to check. */
static int check_sum(const cJSON *sums, const char *path, const char *name, const void *data, size_t n,
                     char *err, size_t errlen)
{
    const cJSON *want;
    char hex[40];
    if (!sums)
        return CLAPP_OK;
    want = cJSON_GetObjectItemCaseSensitive(sums, name);
    snprintf(hex, sizeof hex, "fnv1a64:%016llx", (unsigned long long)data_checksum(data, n));
    if (!cJSON_IsString(want)) {
        snprintf(err, errlen, "%s: the checkpoint has no checksum of tensor %s (corrupt metadata)", path, name);
        return CLAPP_E_FORMAT;
    }
    if (strcmp(want->valuestring, hex) != 0) {
        snprintf(err, errlen, "%s: tensor %s: checksum mismatch (the data is %s, the metadata says %.40s): "
                 "the file is corrupt", path, name, hex, want->valuestring);
        return CLAPP_E_FORMAT;
    }
    return CLAPP_OK;
}

int clapp_ckpt_load(clapp_graph *g, const char *path, const clapp_ckpt_options *opt,
                          char *err, size_t errlen)
{
    ckpt_file cf;
    ckpt_list l = {0};
    uint64_t *begins = NULL;
    uint64_t (*rng_states)[4] = NULL;
    char *rng_have = NULL;
    float **staged = NULL;
    const char *fmt, *rng_text;
    int rc, strict = !opt || opt->strict, loss_version = CLAPP_LOSS_VERSION;
    int64_t n_blocks = 0, n_step = 0;
    cJSON *sums = NULL;

    rc = ckpt_open(&cf, path, err, errlen);
    if (rc < 0)
        goto done;
    fmt = meta_get(&cf, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        snprintf(err, errlen, "%s: not a clapp checkpoint (format '%s', expected '%s')", path,
                 fmt ? fmt : "(none)", CKPT_FORMAT);
        rc = CLAPP_E_FORMAT;
        goto done;
    }
    if ((rc = check_elements(&cf, g, path, err, errlen)) < 0)
        goto done;
    if (meta_get(&cf, "checksums") && !cJSON_IsObject(sums = cJSON_Parse(meta_get(&cf, "checksums")))) {
        snprintf(err, errlen, "%s: the checkpoint metadata 'checksums' is not a JSON object (corrupt)", path);
        rc = CLAPP_E_FORMAT;
        goto done;
    }
    if ((rc = loss_version_check(meta_get(&cf, "loss_version"), g, &loss_version, path, err,
                                 errlen)) < 0)
        goto done;
    if (opt && opt->with_optimizer && meta_get(&cf, "optim") &&
        (rc = check_optim(meta_get(&cf, "optim"), &g->optim.p, path, err, errlen)) < 0)
        goto done;
    rng_states = calloc((size_t)g->n + 1, sizeof *rng_states);
    rng_have = calloc((size_t)g->n + 1, 1);
    if (!rng_states || !rng_have) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    rng_text = meta_get(&cf, "rng");
    if (rng_text && (rc = rng_parse(rng_text, g, rng_states, rng_have, path, err, errlen)) < 0)
        goto done;
    if ((rc = collect(g, opt && opt->with_optimizer, &l)) < 0)
        goto done;
    begins = calloc((size_t)l.n + 1, sizeof *begins);
    staged = calloc((size_t)l.n + 1, sizeof *staged);
    if (!begins || !staged) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    /* Validate and read everything first; only then touch the graph. */
    for (int i = 0; i < l.n; i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(cf.hdr, l.items[i].name);
        size_t n = (size_t)clapp_tensor_numel(l.items[i].t);
        if (!e) {
            if (!strict || l.items[i].optional)
                continue;
            snprintf(err, errlen, "%s: the checkpoint lacks tensor %s", path, l.items[i].name);
            rc = CLAPP_E_NOTFOUND;
            goto done;
        }
        if ((rc = check_entry(&cf, path, l.items[i].name, e, l.items[i].t, &begins[i], err, errlen)) < 0)
            goto done;
        staged[i] = malloc(n * sizeof(float) + 1);
        if (!staged[i]) {
            rc = CLAPP_E_NOMEM;
            goto done;
        }
        if (fseeko(cf.f, (off_t)(cf.data_start + begins[i]), SEEK_SET) != 0 ||
            fread(staged[i], sizeof(float), n, cf.f) != n) {
            snprintf(err, errlen, "%s: tensor %s: truncated data", path, l.items[i].name);
            rc = CLAPP_E_FORMAT;
            goto done;
        }
        if ((rc = check_sum(sums, path, l.items[i].name, staged[i], n * sizeof(float), err, errlen)) < 0)
            goto done;
        for (size_t k = 0; k < n; k++)
            if (!isfinite(staged[i][k])) {
                snprintf(err, errlen, "%s: tensor %s: value %zu is %s (a diverged run or a corrupt file)",
                         path, l.items[i].name, k, isnan(staged[i][k]) ? "NaN" : "infinite");
                rc = CLAPP_E_FORMAT;
                goto done;
            }
    }
    /* No two tensors share bytes. */
    for (int i = 0; i < l.n; i++)
        for (int j = i + 1; staged[i] && j < l.n; j++) {
            uint64_t ni = (uint64_t)clapp_tensor_numel(l.items[i].t) * sizeof(float);
            uint64_t nj = (uint64_t)clapp_tensor_numel(l.items[j].t) * sizeof(float);
            if (staged[j] && ni > 0 && nj > 0 && begins[i] < begins[j] + nj && begins[j] < begins[i] + ni) {
                snprintf(err, errlen, "%s: tensors %s and %s overlap in the data (corrupt)", path,
                         l.items[i].name, l.items[j].name);
                rc = CLAPP_E_FORMAT;
                goto done;
            }
        }
    {
        const char *blocks = meta_get(&cf, "blocks"), *step = meta_get(&cf, "optim_step");
        if ((blocks && (rc = meta_count(blocks, "blocks", path, &n_blocks, err, errlen)) < 0) ||
            (step && (rc = meta_count(step, "optim_step", path, &n_step, err, errlen)) < 0))
            goto done;
    }
    for (int i = 0; i < l.n; i++)
        if (staged[i])
            memcpy(l.items[i].t->data, staged[i], (size_t)clapp_tensor_numel(l.items[i].t) * sizeof(float));
    if (meta_get(&cf, "blocks"))
        g->blocks = n_blocks;
    if (opt && opt->with_optimizer && meta_get(&cf, "optim_step"))
        g->optim.t = n_step;
    for (int i = 1; i < g->n; i++)
        if (rng_have[i])
            g->nodes[i].loss_form->set_rng(g->nodes[i].loss_self, rng_states[i]);
    g->loss_version = loss_version;
    rc = loss_version_each(g, loss_version, 0, path, err, errlen);
done:
    cJSON_Delete(sums);
    free(rng_states);
    free(rng_have);
    for (int i = 0; staged && i < l.n; i++)
        free(staged[i]);
    free(staged);
    free(begins);
    list_free(&l);
    ckpt_close(&cf);
    return rc;
}

char *clapp_ckpt_read_meta(const char *path, const char *key, char *err, size_t errlen)
{
    ckpt_file cf;
    char *out = NULL;
    if (ckpt_open(&cf, path, err, errlen) == CLAPP_OK) {
        const char *v = meta_get(&cf, key);
        if (v)
            out = strdup(v);
        else
            snprintf(err, errlen, "%s: no '%s' in the checkpoint metadata", path, key);
    }
    ckpt_close(&cf);
    return out;
}
