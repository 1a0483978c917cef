/* Parameter tables of the built-in elements. */
#include "graph/builtin.h"

static const clapp_param_desc source_params[] = {
    {"kind", CLAPP_PARAM_ENUM, "audio", 0, 0, "audio|video", "media to decode"},
    {"rate", CLAPP_PARAM_INT, "16000", 1000, 384000, NULL, "audio sample rate (Hz) after resampling"},
    {"block", CLAPP_PARAM_INT, "20480", 1, 100000000, NULL, "time steps per block (samples or frames)"},
    {"lanes", CLAPP_PARAM_INT, "8", 1, 4096, NULL, "streams processed side by side (B)"},
    {"queue", CLAPP_PARAM_INT, "4", 1, 64, NULL, "blocks decoded ahead of compute"},
    {"mode", CLAPP_PARAM_ENUM, "stream", 0, 0, "stream|window",
     "stream: whole files in order; window: one random block-long window per file and epoch"},
    {"window_align", CLAPP_PARAM_INT, "160", 1, 1000000, NULL,
     "window mode: window starts are multiples of this (and at least this)"},
    {"label_rate", CLAPP_PARAM_FLOAT, "100", 0, 1e6, NULL,
     "frame labels per second made from .phn alignments (0: none)"},
    {"width", CLAPP_PARAM_INT, "64", 1, 16384, NULL, "video frame width after scaling"},
    {"height", CLAPP_PARAM_INT, "64", 1, 16384, NULL, "video frame height after scaling"},
    {"fps", CLAPP_PARAM_FLOAT, "10", 0.01, 1000, NULL, "video frame rate after conversion"},
    {"color", CLAPP_PARAM_ENUM, "gray", 0, 0, "gray|rgb", "video channels"},
    {"backend", CLAPP_PARAM_ENUM, "auto", 0, 0, "auto|ffmpeg|sndfile", "audio decoder"},
    {"shuffle", CLAPP_PARAM_BOOL, "false", 0, 1, NULL, "shuffle the manifest order every epoch"},
    {"gain", CLAPP_PARAM_FLOAT, "1", -1e12, 1e12, NULL,
     "input normalisation: every value becomes gain * value + offset"},
    {"offset", CLAPP_PARAM_FLOAT, "0", -1e12, 1e12, NULL, "see gain"},
    {"aug_gain_db", CLAPP_PARAM_FLOAT, "0", 0, 100, NULL,
     "augmentation (audio, per file or window, seeded): gain uniform in [-G, G] dB (0: off)"},
    {"aug_snr", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "augmentation: add Gaussian noise at an SNR uniform in LO:HI dB relative to the signal "
     "power of the file so far or the window, e.g. 5:20 (empty: off)"},
    {"aug_noise", CLAPP_PARAM_ENUM, "white", 0, 0, "white|pink|either",
     "augmentation: colour of the aug_snr noise (either: drawn per file or window)"},
    {"aug_eq_db", CLAPP_PARAM_FLOAT, "0", 0, 40, NULL,
     "augmentation: 1-3 random peaking/shelving biquads, 50 Hz-0.4 rate, gains in [-D, D] dB "
     "(0: off)"},
    {"aug_speed", CLAPP_PARAM_FLOAT, "1", 1, 4, NULL,
     "augmentation: resample by a factor f log-uniform in [1/s, s] (duration x 1/f, pitch x f), "
     "frame labels and windows follow (1: off)"},
};

const clapp_plugin_desc clapp_builtin_source_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "source",
    .version = "1.0.0",
    .kind = CLAPP_KIND_SOURCE,
    .help = "decode the manifest's media files into blocks of B lanes (FFmpeg, libsndfile)",
    .params = source_params,
    .n_params = (int32_t)(sizeof source_params / sizeof source_params[0]),
};

static const clapp_param_desc loss_params[] = {
    {"mode", CLAPP_PARAM_ENUM, "clapp-s", 0, 0, "clapp-s|clapp|hinge-cpc|infonce",
     "clapp-s: hinge, pos+neg every step; clapp: pos or neg per lane (saccade); "
     "hinge-cpc: hinge at the top; infonce: CPC/GIM softmax"},
    {"steps", CLAPP_PARAM_INT, "12", 1, 4096, NULL, "prediction steps K (one W_k each)"},
    {"negatives", CLAPP_PARAM_INT, "10", 1, 100000, NULL, "negatives per positive (clapp mode uses 1)"},
    {"neg_draw", CLAPP_PARAM_ENUM, "per_step", 0, 0, "per_step|shared",
     "per_step: fresh negatives for every prediction step k (GIM, vision code); shared: one set "
     "per context for all k (checkpoints before loss version 2)"},
    {"neg_exclude_self", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "clapp mode: the negative lane is never the context's own lane (default: uniform over all "
     "lanes, as the reference)"},
    {"window", CLAPP_PARAM_INT, "128", 0, 100000000, NULL,
     "positives window: pairs come from one random window of this many steps (0: all)"},
    {"retro", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "independent W_retro for the context path (no weight transport)"},
    {"detach_context", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "no gradient through the context (block_grad variant)"},
    {"target", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "predict the output of this element instead of the input's own future"},
    {"grad_target", CLAPP_PARAM_ENUM, "auto", 0, 0, "auto|true|false",
     "with target=: also update the target element through its target role; auto: true for "
     "clapp-s and clapp (the appendix); infonce and hinge-cpc: false across modules (GIM), "
     "true inside the context's module (CPC end to end)"},
    {"context", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "direct feedback: take the context from this later layer (same rate and lanes), detached; "
     "targets stay this layer's output, only this layer and W_k learn"},
    {"form", CLAPP_PARAM_ENUM, "auto", 0, 0, "auto|flat|video",
     "video: [B, C, T, H, W] streams, W_k shared over positions, all other (clip, time) pairs "
     "negative (core/learning/loss_video.h); flat: one vector per step; auto: video for 5-D streams"},
    {"pool", CLAPP_PARAM_STRING, "shared", 0, 0, NULL,
     "video form: shared = no pooling, W_k [C, C] shared over positions (the default); P >= 1 = "
     "z and c averaged over non-overlapping PxP windows (G = ceil(H/P) ceil(W/P)), flattened "
     "channel-major, one FULL W_k [C*G, C*G] coupling positions (CLAPP++); frame or 0 = the "
     "whole-frame mean (G = 1). W holds K (C G)^2 floats, refused above 2^26 (256 MiB)"},
};

const clapp_plugin_desc clapp_builtin_loss_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "clapp",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LOSS,
    .help = "contrastive predictive loss on the module output; local update of the module's layers",
    .params = loss_params,
    .n_params = (int32_t)(sizeof loss_params / sizeof loss_params[0]),
};

static const clapp_param_desc supervised_params[] = {
    {"classes", CLAPP_PARAM_INT, "41", 2, 1 << 20, NULL, "number of label classes (41: flite/CMU phones)"},
    {"labels", CLAPP_PARAM_ENUM, "frames", 0, 0, "frames|class",
     "frames: each valid step gets the frame label at its centre, as probe_phoneme reads it "
     "(unlabelled steps skipped); class: the lane's class_label on the time average of its valid "
     "steps in the block, as probe_action (clips without a label skipped)"},
};

/* The paper's reference algorithms (appendix): at the top of one module,
 * supervised end to end; after every layer, greedy supervised. */
static const clapp_plugin_desc clapp_builtin_supervised_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "supervised",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LOSS,
    .help = "supervised loss: its own linear classifier (weight, bias; learned by the host's "
            "optimizer) with softmax cross-entropy on the frame or clip labels; local update of "
            "the module's layers (core/learning/loss_supervised.h)",
    .params = supervised_params,
    .n_params = (int32_t)(sizeof supervised_params / sizeof supervised_params[0]),
};

const clapp_plugin_desc *const clapp_builtin_descs[] = {
    &clapp_builtin_source_desc,
    &clapp_builtin_loss_desc,
    &clapp_builtin_supervised_desc,
    NULL,
};
