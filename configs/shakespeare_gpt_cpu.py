"""Tiny Shakespeare, character-level GPT at nanoGPT's CPU size: 4 layers, 4 heads, 128
wide, context 64, batch 12, no dropout, gradient clipping at 1, weight decay 0.1, cosine
decay to a tenth, evaluated every 250 steps, as nanoGPT's README runs it on a CPU; but
trained with Muon (optim.py: the Dense kernels' Nesterov momentum orthogonalized by 5
Newton-Schulz iterations, Adam with b2 0.99 for the embeddings, norms and biases) at lr
1e-2 over 500 steps with 25 warmup steps, instead of AdamW at 1e-3 over 2000 with 100.

    python -m practice_jax.main --config=configs/shakespeare_gpt_cpu.py

Prepare the data offline first if needed (FOLDER holds input.txt):
    python -m practice_jax.data.prepare tiny_shakespeare --manual_dir=FOLDER

Result, on the 2-core Intel Xeon machine kind (jax 0.10.2, 2026-12-03): validation loss
1.8724 after 500 steps (test 1.9079); seeds 1-4: 1.8458, 1.8674, 1.8607, 1.8591 (test
1.9082, 1.9207, 1.8976, 1.8968). AdamW over the same 500 steps and schedule: 2.1341 at lr
4e-3, 2.3495 at 1e-2. From process start to validation loss <= 1.88: 21.4 s (median of
21.66, 21.41, 21.13 s), while nanoGPT's loop in PyTorch (torch 2.13.0, float32) took
50.5 s (50.6, 50.5, 50.0 s) for its 2000 iterations and never reached 1.88 (1.9047):
0.42 of its wall time (0.43, 0.42, 0.42 per alternating pair, 01:38-01:42 UTC, load
average 1.4-1.9). Reproduce:
`python bench/lm_speed.py --models gpt --steps 50 --repeats 5 --target_repeats 3
--torch_python=PYTHON_WITH_TORCH` (or `python bench/time_to_target.py --config
configs/shakespeare_gpt_cpu.py --metric loss --target 1.88 --repeats 3` for this side
alone).

Muon's step costs more than AdamW's: its update took 6.2 ms against 1.5 ms for this
model's parameters, the step 41.4 against 55.1 steps/s (medians of 5 rounds through the
loop's compiled chunk, one process); it needs 500 steps where AdamW needed 1250 (below).
`optimizer.muon_dtype="auto"` runs its iteration's matmuls in bfloat16 on CPUs with
AMX-BF16 (13.1 ms in float32). On the 2-core AMD EPYC kind (no AMX) Muon is not measured.

`model.matmul_dtype="auto"`: the Dense layers' matmuls take bfloat16 inputs with float32
accumulation on CPUs with AMX-BF16 and stay float32 elsewhere (models/precision.py).
`model.batch_groups=2`: the batch of 12 computed as 2 independent slices in each step
(models/groups.py; the same numbers). 3 until the Dense layers' kernel gradients ran in
bfloat16 (2026-12-03); since then 2 slices are faster on the Intel Xeon kind: 68.4 vs
64.2 steps/s (AdamW, 9 alternating rounds in one process; 4 slices 57.1, 1 slice 52.2).

Before Muon (until 2026-12-03) this config trained with AdamW (b2 0.99) at lr 4e-3 over
1250 steps with 100 warmup steps: validation 1.8536 after 1250 steps (seeds 1 and 2:
1.8445, 1.8517; nanoGPT's recipe, 2000 steps at 1e-3, gave 1.8690 here and 1.9047 in
nanoGPT); to validation 1.88 in 44.1 s against 95.7 s for nanoGPT's 2000 iterations on the
AMD EPYC (0.46; 2026-12-02), and in 41.9 s against 65.2 s on the Intel Xeon (0.64;
2026-12-02 18:04-18:13 UTC). Learning rates tried then with AdamW (seed 0, validation loss
at the last step; 1e-3 over 2000 steps: 1.8690): over 1250 steps 2e-3 1.9087, 3e-3 1.8701,
4e-3 1.8536; over 1000 steps 4e-3 1.9212, 6e-3 1.9007; 5e-3 over 1100 1.8826; 6e-3 over
1200 1.8524 (seeds 1 and 2: 1.8689, 1.8828: unstable); over 900 steps, 8 trials of
sweeps/shakespeare_gpt_cpu.py's TPE search ended at 1.925 to 2.094. With Muon (seed 0,
validation loss at the last step, 100 warmup steps unless said): lr 4e-3 over 1250 steps
1.6513, over 800 1.7922, over 600 1.8816; 6e-3 over 600 1.8490, over 500 1.9171; 1e-2
over 600 1.8408, over 500 1.8983, with 50 warmup steps 1.8748, with 25 1.8724, and 25
warmup steps over 450 1.9146.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 64
  config.model = model_config("gpt", num_layers=4, num_heads=4, embed_dim=128, dropout=0.0,
                              matmul_dtype="auto", batch_groups=2)
  config.optimizer.name = "muon"
  config.optimizer.learning_rate = 1e-2
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 25
  config.schedule.end_factor = 0.1
  config.batch_size = 12
  config.num_steps = 500
  config.eval_every_steps = 250
  config.eval_batch_size = 100
  config.early_stopping.metric = "validation/loss"
  config.steps_per_dispatch = 50
  # Like nanoGPT's train.py: no samples while training (each costs ~0.5 s here); the
  # final ones are still printed and written to samples.txt.
  config.task.sampling.during_training = False
  return config
