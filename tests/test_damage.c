/* Damaged input is a warning, not a failure, unless --strict: a WAV cut
 * short of the data size its header declares is reported naming the file
 * and the seconds decoded, declared and missing, its decodable part is used
 * and the run exits 0; with --strict (run, train, extract, eval) the same
 * file fails and the command exits 1. Complete files, and WAVs whose header
 * declares no size (written to a pipe), give no warning. Text inputs that
 * start with a UTF-8 byte order mark work. `clapp train --resume` appends
 * to its metrics file and does not count the skipped blocks' audio as
 * processed. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

/* Run `clapp ARGS` in dir; expect exit status want; returns stderr (free it). */
static char *expect_status(const char *dir, int want, const char *args)
{
    char *errp = tu_path(dir, "err.txt"), *err;
    int rc = tu_run("cd '%s' && %s %s > out.txt 2> err.txt; test $? -eq %d", dir, CLAPP_BIN, args, want);
    err = tu_read_text(errp);
    if (rc != 0)
        fail_msg("clapp %s: expected exit %d; stderr:\n%s", args, want, err);
    free(errp);
    return err;
}

static char *setup_dir(void)
{
    char *dir = tu_tmpdir("damage");
    /* a.wav 3 s; t.wav its first 40000 bytes (78 header bytes, 19961
     * samples: 1.248 s of the 3 s declared); p.wav written to a pipe, whose
     * size fields say nothing. */
    assert_int_equal(tu_run("cd '%s' && ffmpeg -nostdin -v error -f lavfi -i 'sine=f=440:d=3' -ar 16000 -ac 1 a.wav && "
                            "head -c 40000 a.wav > t.wav && test \"$(head -c 78 a.wav | tail -c 8 | head -c 4)\" = data && "
                            "ffmpeg -nostdin -v error -f lavfi -i 'sine=f=440:d=1' -ar 16000 -ac 1 -f wav - > p.wav && "
                            "printf 'source rate=16000 block=4000 lanes=1 ! features name=feat out=out/\\n' > f.pipe && "
                            "printf 'source rate=16000 block=4000 lanes=1 ! conv1d name=c out=4 kernel=4 stride=2 "
                            "! clapp name=l steps=2 negatives=2 window=0\\n' > t.pipe && "
                            "printf 'a.wav\\nt.wav\\np.wav\\n' > m.tsv && printf 'a.wav\\tx\\np.wav\\ty\\nt.wav\\tx\\n' > lab.tsv",
                            dir), 0);
    return dir;
}

static void test_truncated_wav_warns(void **state)
{
    char *dir = setup_dir(), *err;
    static const char *const want = "t.wav: truncated: 1.248 s decoded of the 3.000 s its header declares "
                                    "(1.752 s missing); what could be decoded was used";
    (void)state;
    err = expect_status(dir, 0, "run f.pipe --data m.tsv");
    if (tu_count_substr(err, "clapp: warning: source: ") != 1 || tu_count_substr(err, want) != 1 ||
        tu_count_substr(err, "a.wav") != 0 || tu_count_substr(err, "p.wav") != 0)
        fail_msg("expected one warning, '%s'; stderr:\n%s", want, err);
    free(err);
    assert_int_equal(tu_run("cd '%s' && /usr/bin/python3 -c \"import numpy as n; "
                            "assert [n.load('out/' + k + '.npy').shape[0] for k in 'atp'] == [48000, 19961, 16000]\"",
                            dir), 0);
    tu_rmtree(dir);
    free(dir);
}

/* --strict: the same cut WAV fails in run, train, extract and eval. */
static void test_strict_fails(void **state)
{
    char *dir = setup_dir(), *err;
    static const char *const cmds[] = {
        "run f.pipe --data m.tsv --strict",
        "train t.pipe --data m.tsv --metrics x.jsonl --strict",
        "extract t.pipe --random-init --data m.tsv --out x --strict",
        "eval t.pipe --random-init --train lab.tsv --test lab.tsv --probe c:probe_action --epochs 1 "
        "--probe-seeds 1 --strict",
    };
    (void)state;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        err = expect_status(dir, 1, cmds[i]);
        if (tu_count_substr(err, "clapp: error: source: ") != 1 ||
            tu_count_substr(err, "t.wav: truncated: 1.248 s decoded of the 3.000 s its header declares "
                              "(1.752 s missing) (strict: damage fails the file)") != 1)
            fail_msg("clapp %s: stderr:\n%s", cmds[i], err);
        free(err);
    }
    /* The sequence of the failed file is marked partial. */
    assert_int_equal(tu_run("cd '%s' && test -s out/t.partial.npy && test ! -e out/t.npy && test -s out/a.npy", dir),
                     0);
    /* Without --strict the same commands succeed. */
    err = expect_status(dir, 0, "extract t.pipe --random-init --data m.tsv --out y");
    free(err);
    err = expect_status(dir, 0, "eval t.pipe --random-init --train lab.tsv --test lab.tsv --probe c:probe_action "
                                "--epochs 1 --probe-seeds 1");
    free(err);
    tu_rmtree(dir);
    free(dir);
}

/* A manifest, a .phn alignment and a pipeline file saved with a UTF-8 BOM. */
static void test_utf8_bom(void **state)
{
    char *dir = setup_dir(), *err;
    (void)state;
    assert_int_equal(tu_run("cd '%s' && printf '\\357\\273\\277a.wav\\t-\\ta.phn\\n' > bom.tsv && "
                            "printf '\\357\\273\\2770 24000 pau\\n24000 48000 aa\\n' > a.phn && "
                            "printf '\\357\\273\\277source rate=16000 block=4000 lanes=1 ! features name=feat "
                            "out=bom/\\n' > bom.pipe", dir), 0);
    err = expect_status(dir, 0, "run bom.pipe --data bom.tsv");
    assert_int_equal(tu_count_substr(err, "error"), 0);
    free(err);
    assert_int_equal(tu_run("cd '%s' && test -s bom/a.npy", dir), 0);
    tu_rmtree(dir);
    free(dir);
}

/* --resume appends to the metrics (a "resume" line between the runs) and
 * its summary counts the audio of its own blocks only: 1 epoch of 5.25 s,
 * resumed to 2 epochs, reports 5.25 s, not 10.5 s. */
static void test_resume_metrics(void **state)
{
    char *dir = setup_dir(), *err;
    (void)state;
    err = expect_status(dir, 0, "train t.pipe --data m.tsv --metrics r.jsonl --checkpoint c.st -q");
    free(err);
    err = expect_status(dir, 0, "train t.pipe --data m.tsv --epochs 2 --metrics r.jsonl --checkpoint c.st --resume -q");
    free(err);
    assert_int_equal(tu_run("cd '%s' && /usr/bin/python3 -c \"import json\n"
                            "L = [json.loads(l) for l in open('r.jsonl')]\n"
                            "ev = [l['event'] for l in L]\n"
                            "s = [l for l in L if l['event'] == 'summary']\n"
                            "b = [l['block'] for l in L if l['event'] == 'block']\n"
                            "assert ev.count('summary') == 2 and ev.count('resume') == 1, ev\n"
                            "assert ev.index('resume') == ev.index('summary') + 1, ev\n"
                            "assert b == list(range(1, len(b) + 1)), b\n"
                            "assert s[1]['blocks'] == 2 * s[0]['blocks'], s\n"
                            "assert abs(s[0]['media_seconds'] - 5.2476) < 1e-3, s\n"
                            "assert abs(s[1]['media_seconds'] - s[0]['media_seconds']) < 1e-6, s\n\"", dir), 0);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_wav_warns),
        cmocka_unit_test(test_strict_fails),
        cmocka_unit_test(test_utf8_bom),
        cmocka_unit_test(test_resume_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
