/* The length a WAV header declares (see wav_header.h). */
#include "media/wav_header.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static unsigned le16(const unsigned char *b)
{
    return (unsigned)b[0] | (unsigned)b[1] << 8;
}

double clapp_wav_declared_seconds(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char h[12], fmt[16];
    unsigned tag = 0, block_align = 0;
    uint32_t rate = 0;
    double seconds = -1;
    int have_fmt = 0;

    if (!f)
        return -1;
    if (fread(h, 1, 12, f) != 12 || memcmp(h, "RIFF", 4) != 0 || memcmp(h + 8, "WAVE", 4) != 0)
        goto done;
    for (int i = 0; i < 64; i++) {
        unsigned char c[8];
        uint32_t size;
        if (fread(c, 1, 8, f) != 8)
            break;
        size = le32(c + 4);
        if (!memcmp(c, "fmt ", 4)) {
            if (size < 16 || fread(fmt, 1, 16, f) != 16)
                break;
            tag = le16(fmt);
            rate = le32(fmt + 4);
            block_align = le16(fmt + 12);
            if (tag == 0xFFFE && size >= 40) {
                /* WAVE_FORMAT_EXTENSIBLE: the real tag starts the SubFormat GUID. */
                unsigned char ext[24];
                if (fread(ext, 1, 24, f) != 24)
                    break;
                tag = le16(ext + 8);
                size -= 24;
            }
            have_fmt = 1;
            size -= 16;
        } else if (!memcmp(c, "data", 4)) {
            /* 1 PCM, 3 IEEE float, 6 A-law, 7 mu-law: one block per sample frame. */
            if (have_fmt && size != 0 && size != 0xFFFFFFFFu && block_align > 0 && rate > 0 &&
                (tag == 1 || tag == 3 || tag == 6 || tag == 7))
                seconds = (double)(size / block_align) / (double)rate;
            break;
        }
        /* Chunks are padded to an even size. */
        if (fseek(f, (long)size + (long)(size & 1), SEEK_CUR) != 0)
            break;
    }
done:
    fclose(f);
    return seconds;
}
