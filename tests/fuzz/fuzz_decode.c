/* Fuzz target: media decoding from memory (clapp_decoder_open_memory: an
 * AVIOContext over the input). The first byte chooses what is asked for:
 * audio at 8 or 16 kHz, or video of 8-22 x 6-20 pixels, gray or RGB, at
 * 7.5 or 25 fps; the rest is the file. Everything is decoded (up to 200000
 * samples or 400 frames, so one input stays quick); a failing open or read
 * must say why, and the counters must be sane. */
#include <libavutil/log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "media/decode.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    av_log_set_level(AV_LOG_QUIET);   /* damaged input makes FFmpeg chatty */
    return 0;
}

static void need_message(int64_t rc, const char *err, const char *what)
{
    if (rc < 0 && !*err) {
        fprintf(stderr, "%s failed (status %lld) without a message\n", what, (long long)rc);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float buf[4 * 3 * 22 * 20];
    clapp_decode_params p;
    clapp_decoder *dec = NULL;
    char err[1024] = "";
    int64_t total = 0, limit, frame, rc;
    uint8_t ctl;
    if (size < 1)
        return 0;
    ctl = data[0];
    memset(&p, 0, sizeof p);
    p.backend = CLAPP_DECODE_AUTO;
    if (ctl & 1) {
        p.kind = CLAPP_MEDIA_VIDEO;
        p.width = 8 + 2 * ((ctl >> 1) & 7);
        p.height = 6 + 2 * ((ctl >> 4) & 7);
        p.fps = ctl & 0x80 ? 25.0 : 7.5;
        p.channels = ctl & 0x40 ? 3 : 1;
        frame = (int64_t)p.channels * p.width * p.height;
        limit = 400;
    } else {
        p.kind = CLAPP_MEDIA_AUDIO;
        p.rate = ctl & 2 ? 16000 : 8000;
        frame = 1;
        limit = 200000;
    }
    rc = clapp_decoder_open_memory(&dec, "<fuzz>", data + 1, size - 1, &p, err, sizeof err);
    need_message(rc, err, "open");
    if (rc < 0)
        return 0;
    while (total < limit) {
        int64_t want = (int64_t)(sizeof buf / sizeof buf[0]) / frame;
        err[0] = 0;
        rc = clapp_decoder_read(dec, buf, want, err, sizeof err);
        need_message(rc, err, "read");
        if (rc <= 0)
            break;
        if (rc > want)
            abort();
        total += rc;
    }
    if (clapp_decoder_error_count(dec) < 0 || clapp_decoder_lost_seconds(dec) < 0 ||
        clapp_decoder_input_rate(dec) < 0)
        abort();
    clapp_decoder_duration_frames(dec);
    clapp_decoder_declared_seconds(dec, NULL);
    clapp_decoder_close(dec);
    return 0;
}
