/* clapp train PIPE --data MANIFEST: learn online while the files stream
 * through the pipeline; JSONL metrics per block. */
#include <stdio.h>
#include <stdlib.h>

#include "stream.h"

static void train_usage(void)
{
    printf("usage: clapp train PIPE --data MANIFEST [--epochs N] [--seed S] [--lr LR]\n"
           "                   [--metrics FILE] [--diag-every N] [--set NAME.KEY=VALUE]... [-q|-v]\n"
           "                   [--warmup N] [--clip NORM] [--weight-decay WD]\n"
           "                   [--adam-eps E] [--adam-beta1 B1] [--adam-beta2 B2]\n"
           "                   [--checkpoint PATH [--checkpoint-every BLOCKS] [--resume]]\n"
           "                   [--budget-minutes M [--snapshots N]] [--strict]\n"
           "Streams the manifest's files through the pipeline --epochs times; every loss element\n"
           "updates its module's layers after each block (Adam; --lr is the default rate, lr= per\n"
           "element overrides it). Metrics: one JSON line per block (loss per loss element) and a\n"
           "summary line, on standard output or in FILE. A progress line goes to standard error\n"
           "when it is a terminal. --checkpoint writes a safetensors checkpoint at the end (and every\n"
           "BLOCKS blocks), atomically; --resume first loads it, optimizer state included, and\n"
           "refuses other optimizer settings than the checkpoint's; its metrics are appended to FILE\n"
           "after a {\"event\":\"resume\"} line (block numbers go on; media_seconds counts the audio of\n"
           "this run's blocks, not of the blocks skipped to get back to the checkpoint).\n"
           "--budget-minutes M stops the training after M minutes of wall-clock time (what is\n"
           "learned so far is saved to --checkpoint); --snapshots N also writes N checkpoints at\n"
           "k/N of the budget, PATH.snapK.safetensors, each with a \"snapshot\" metrics line (blocks,\n"
           "seconds, media_seconds): the points of a learning curve.\n"
           "Optimizer (each off by default, so the paper's setting stays the reference):\n"
           "  --warmup N          the learning rate ramps linearly from 0 over the first N blocks\n"
           "                      (step k uses lr*k/N)\n"
           "  --clip NORM         scale each element's gradients so that their joint L2 norm is at\n"
           "                      most NORM (0: off)\n"
           "  --weight-decay WD   decoupled weight decay (AdamW): w -= lr*WD*w every step\n"
           "  --adam-eps E, --adam-beta1 B1, --adam-beta2 B2   Adam's settings (1e-8, 0.9, 0.999)\n"
           "Diagnostics: --diag-every N (default 16, 0: off) adds to the first and every N-th block\n"
           "line a \"diag\" object: per layer \"dead\" (fraction of output channels zero at every valid\n"
           "step of the block; constant, for layers without ReLU) and \"pr\" (participation ratio of\n"
           "the channels' covariance, tr(C)^2/tr(C^2)), per learning element \"grad_norm\" (before\n"
           "clipping), \"update_norm\" and \"weight_norm\" (L2, over all its tensors).\n"
           "Under mpirun -np N (a clapp built with MPI) the ranks train one model data parallel: each\n"
           "reads its share of every epoch's files, one allreduce per step averages the gradients,\n"
           "rank 0 writes the checkpoints and metrics; lanes= is per rank (README: Scaling out with MPI).\n"
           "Damaged input and --strict as for 'clapp run'. Exit status as 'clapp run'.\n");
}

int cli_train(int argc, char **argv)
{
    cli_options o;
    int help = 0, status;

    status = cli_options_parse(&o, argc, argv, &help);
    if (status == CLI_OK && help)
        train_usage();
    else if (status == CLI_OK)
        status = cli_stream(&o, 1);
    cli_options_free(&o);
    return status;
}
