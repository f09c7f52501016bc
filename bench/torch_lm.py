"""PyTorch baselines for the Tiny Shakespeare language models: a char GPT written the way
nanoGPT writes model.py and train.py, and a char-rnn ``nn.LSTM``. Benchmark only (needs
torch, the pyproject ``bench`` extra; keep it out of the project's venv:
``python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy``).

    # nanoGPT's train.py loop: time to validation <= 1.88 and to 2000 iterations
    /tmp/torchenv/bin/python bench/torch_lm.py train [--max_iters 2000] [--target 1.88]
    # train steps/s, median of 3 rounds
    /tmp/torchenv/bin/python bench/torch_lm.py speed --model gpt|lstm [--steps 50]
    # a worker that bench/lm_speed.py drives over stdin ("run N" -> seconds)
    /tmp/torchenv/bin/python bench/torch_lm.py worker --model gpt|lstm

GPT: nanoGPT's README CPU settings for ``config/train_shakespeare_char.py`` (4 layers,
4 heads, 128 wide, block 64, batch 12, dropout 0, AdamW lr 1e-3 betas (0.9, 0.99),
weight decay 0.1 on the matrices only, 100 warmup iterations then cosine to 1e-4 at
2000, gradient clipping at 1, evaluation every 250 iterations of 20 batches per split,
``--compile=False``), with biases in the Linear and LayerNorm layers (``bias=True``) as
practice_jax's GPT has them. Data: nanoGPT's data/shakespeare_char/prepare.py (the
sorted characters of input.txt, the first 90% for training, the rest for validation).

LSTM: configs/shakespeare_lstm.py's model (embedding 64, 2 x nn.LSTM 128, linear to the
vocabulary), batch 50, sequences of 50, RMSprop lr 2e-3 (alpha 0.95), clipping at 5.

Uses every core (``torch.set_num_threads(os.cpu_count())``). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

DATA = "/work/shared/data/tiny_shakespeare/input.txt"


# -- nanoGPT's model.py (the parts this configuration uses) ------------------------------

class LayerNorm(nn.Module):
  def __init__(self, ndim, bias):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(ndim))
    self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

  def forward(self, x):
    return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
  def __init__(self, n_embd, n_head, dropout, bias):
    super().__init__()
    self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
    self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
    self.resid_dropout = nn.Dropout(dropout)
    self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout

  def forward(self, x):
    B, T, C = x.size()
    q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
    k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
    q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
    v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                       dropout_p=self.dropout if self.training else 0,
                                       is_causal=True)
    y = y.transpose(1, 2).contiguous().view(B, T, C)
    return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
  def __init__(self, n_embd, dropout, bias):
    super().__init__()
    self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
    self.gelu = nn.GELU()
    self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):
    return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
  def __init__(self, n_embd, n_head, dropout, bias):
    super().__init__()
    self.ln_1 = LayerNorm(n_embd, bias)
    self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
    self.ln_2 = LayerNorm(n_embd, bias)
    self.mlp = MLP(n_embd, dropout, bias)

  def forward(self, x):
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
  def __init__(self, vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128,
               dropout=0.0, bias=True):
    super().__init__()
    self.block_size = block_size
    self.transformer = nn.ModuleDict(dict(
        wte=nn.Embedding(vocab_size, n_embd),
        wpe=nn.Embedding(block_size, n_embd),
        drop=nn.Dropout(dropout),
        h=nn.ModuleList([Block(n_embd, n_head, dropout, bias) for _ in range(n_layer)]),
        ln_f=LayerNorm(n_embd, bias)))
    self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
    self.transformer.wte.weight = self.lm_head.weight    # weight tying
    self.apply(self._init_weights)
    for name, p in self.named_parameters():
      if name.endswith("c_proj.weight"):
        torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

  def _init_weights(self, module):
    if isinstance(module, nn.Linear):
      torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
      if module.bias is not None:
        torch.nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
      torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

  def forward(self, idx, targets=None):
    t = idx.size(1)
    pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
    x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
    for block in self.transformer.h:
      x = block(x)
    logits = self.lm_head(self.transformer.ln_f(x))
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                           ignore_index=-1)
    return logits, loss

  def configure_optimizers(self, weight_decay, learning_rate, betas):
    params = [p for p in self.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


# -- char-rnn LSTM ------------------------------------------------------------------------

class CharLSTM(nn.Module):
  def __init__(self, vocab_size, embed=64, hidden=128, layers=2):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, embed)
    self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
    self.head = nn.Linear(hidden, vocab_size)

  def forward(self, idx, targets):
    logits = self.head(self.lstm(self.embed(idx))[0])
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# -- nanoGPT's data preparation and train.py loop -----------------------------------------

def load_data(path: str = DATA):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  chars = sorted(set(text))
  stoi = {c: i for i, c in enumerate(chars)}
  data = np.array([stoi[c] for c in text], dtype=np.int64)
  n = len(data)
  return torch.from_numpy(data[:int(n * 0.9)]), torch.from_numpy(data[int(n * 0.9):]), len(chars)


def get_batch(data, block_size, batch_size):
  ix = torch.randint(len(data) - block_size, (batch_size,))
  x = torch.stack([data[i:i + block_size] for i in ix])
  y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
  return x, y


def get_lr(it, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000):
  if it < warmup_iters:
    return learning_rate * (it + 1) / (warmup_iters + 1)
  if it > lr_decay_iters:
    return min_lr
  ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
  return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def build(model: str, vocab: int):
  if model == "gpt":
    net = GPT(vocab)
    return net, net.configure_optimizers(0.1, 1e-3, (0.9, 0.99)), 64, 12, 1.0
  net = CharLSTM(vocab)
  return net, torch.optim.RMSprop(net.parameters(), lr=2e-3, alpha=0.95), 50, 50, 5.0


def train(args) -> None:
  """nanoGPT's train.py loop; prints one JSON line per evaluation (unix time included)."""
  torch.manual_seed(args.seed)
  train_data, val_data, vocab = load_data(args.data)
  model, optimizer, block, batch, clip = build("gpt", vocab)
  eval_iters, eval_interval = 20, 250

  @torch.no_grad()
  def estimate_loss():
    out = {}
    model.eval()
    for split, data in (("train", train_data), ("val", val_data)):
      losses = torch.zeros(eval_iters)
      for k in range(eval_iters):
        x, y = get_batch(data, block, batch)
        losses[k] = model(x, y)[1].item()
      out[split] = losses.mean().item()
    model.train()
    return out

  start = time.time()
  reached = None
  x, y = get_batch(train_data, block, batch)
  for it in range(args.max_iters + 1):
    lr = get_lr(it, lr_decay_iters=args.max_iters)
    for group in optimizer.param_groups:
      group["lr"] = lr
    if it % eval_interval == 0:
      losses = estimate_loss()
      now = time.time()
      if reached is None and losses["val"] <= args.target:
        reached = now - start
      print(json.dumps({"iter": it, "train": round(losses["train"], 4),
                        "val": round(losses["val"], 4), "time": now,
                        "elapsed_s": round(now - start, 2)}), flush=True)
    if it == args.max_iters:
      break
    _, loss = model(x, y)
    x, y = get_batch(train_data, block, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
  print(json.dumps({"done": True, "train_s": round(time.time() - start, 2),
                    "to_target_s": None if reached is None else round(reached, 2),
                    "target": args.target}), flush=True)


def speed_runner(model_name: str, data: str = DATA):
  """run(steps) -> seconds for `steps` train steps (nanoGPT's step: batch drawn, forward,
  backward, clipping, optimizer step)."""
  torch.manual_seed(0)
  train_data, _, vocab = load_data(data)
  model, optimizer, block, batch, clip = build(model_name, vocab)
  model.train()

  def run(steps: int) -> float:
    begin = time.perf_counter()
    for _ in range(steps):
      x, y = get_batch(train_data, block, batch)
      _, loss = model(x, y)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)
    float(loss.detach())
    return time.perf_counter() - begin
  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("mode", choices=("train", "speed", "worker"))
  parser.add_argument("--model", default="gpt", choices=("gpt", "lstm"))
  parser.add_argument("--data", default=DATA)
  parser.add_argument("--max_iters", type=int, default=2000)
  parser.add_argument("--target", type=float, default=1.88)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=1337)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  if args.mode == "train":
    return train(args)
  run = speed_runner(args.model, args.data)
  run(args.steps)                                 # warm-up
  if args.mode == "worker":                       # "run N" -> seconds, one line each
    print("ready", flush=True)
    for line in sys.stdin:
      if line.startswith("run "):
        print(run(int(line.split()[1])), flush=True)
    return
  rates = [args.steps / run(args.steps) for _ in range(args.repeats)]
  print(json.dumps({"model": args.model, "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "steps_per_s": round(statistics.median(rates), 2),
                    "all": [round(r, 2) for r in rates],
                    "load_average": os.getloadavg()}))


if __name__ == "__main__":
  main()
