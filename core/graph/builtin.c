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
    {"io_timeout", CLAPP_PARAM_FLOAT, "0", 0, 1e6, NULL,
     "seconds an input (FIFO, network stream) may keep the decoder waiting for data before the "
     "file fails (0: no limit; a stop always ends the wait)"},
    {"strict", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "damaged input (packets the decoder skipped, a file shorter than its header declares) fails "
     "the file instead of a warning"},
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

const clapp_plugin_desc *const clapp_builtin_descs[] = {
    &clapp_builtin_source_desc,
    NULL,
};
