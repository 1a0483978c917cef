/* clapp train --budget-minutes / --snapshots: the run stops once the budget
 * is spent, writes N snapshots at k/N of it (loadable checkpoints, one
 * "snapshot" metrics line each, in order, with growing blocks and audio),
 * and refuses --snapshots without a budget. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

static const char *check_py =
    "import json, sys\n"
    "rows = [json.loads(l) for l in open(sys.argv[1])]\n"
    "snaps = [r for r in rows if r['event'] == 'snapshot']\n"
    "summ = [r for r in rows if r['event'] == 'summary'][-1]\n"
    "budget = float(sys.argv[2]) * 60\n"
    "assert [s['k'] for s in snaps] == [1, 2, 3] and all(s['of'] == 3 for s in snaps), snaps\n"
    "for a, b in zip(snaps, snaps[1:]):\n"
    "    assert a['blocks'] < b['blocks'] and a['media_seconds'] < b['media_seconds'], snaps\n"
    "per_block = summ['seconds'] / summ['blocks']\n"
    "for s in snaps:\n"
    "    # taken at the first block that ends past k/N of the budget\n"
    "    assert budget * s['k'] / 3 <= s['seconds'] <= budget * s['k'] / 3 + 3 * per_block + 1, (s, per_block)\n"
    "assert summ['seconds'] <= budget + 3 * per_block + 1, (summ, budget)\n"
    "assert summ['blocks'] == snaps[-1]['blocks'], (summ, snaps[-1])\n"
    "print('snapshots at', [s['seconds'] for s in snaps], 'blocks', summ['blocks'])\n";

static void test_budget_snapshots(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("budget"), *py = tu_path(dir, "check.py");
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i anoisesrc=d=20:r=16000:a=0.3:seed=1 a.wav && "
                            "printf 'a.wav\\n' > m.tsv && mkdir ck && printf '%%s\\n' "
                            "'source rate=16000 block=8000 lanes=2 mode=window window_align=160' "
                            "'! conv1d name=conv1 out=16 kernel=10 stride=5 pad=2' "
                            "'! clapp name=loss1 steps=4 negatives=3 window=0' > p.pipe", dir), 0);
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 100000 --budget-minutes 0.05 "
                            "--snapshots 3 --checkpoint ck/c.safetensors --metrics m.jsonl -q", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_write_text(py, check_py), 0);
    assert_int_equal(tu_run("/usr/bin/python3 %s %s/m.jsonl 0.05", py, dir), 0);
    /* every snapshot is a checkpoint that loads */
    for (int k = 1; k <= 3; k++)
        assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint ck/c.snap%d.safetensors --data m.tsv "
                                "--out x%d -q && test -s x%d/a.conv1.npy", dir, CLAPP_BIN, k, k, k), 0);
    /* --snapshots needs a budget: one clear error, status 2 */
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --snapshots 3 --checkpoint ck/d.safetensors "
                            "-q 2> err.txt; test $? -eq 2 && grep -q -- '--budget-minutes' err.txt", dir,
                            CLAPP_BIN), 0);
    free(py);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
