"""One timed SAE training run, for benchmarks/sae_throughput.py; runs in either environment.

    python benchmarks/_sae_worker.py mechlib|saelens standard|topk ACTS.safetensors STEPS

Prints one JSON line: tokens per second over the timed steps, and FVU on the held-out activations.
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file

BATCH, EXPANSION, K, L1, LR, WARMUP = 4096, 8, 16, 5.0, 1e-3, 3


def main() -> None:
    backend, arch, path, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else LR
    torch.manual_seed(0)
    data = load_file(path)
    train, held_out = data["train"], data["held_out"]  # [n, d_in] each
    d_in = train.shape[1]
    n_batches = len(train) // BATCH
    batches = iter([train[(i % n_batches) * BATCH:(i % n_batches + 1) * BATCH] for i in range(steps + WARMUP)])
    if backend == "mechlib":
        from mechlib.sae import SAEConfig, Trainer, TrainConfig, make_sae

        sae = make_sae(SAEConfig(d_in=d_in, d_sae=EXPANSION * d_in, architecture=arch, k=K, l1_coefficient=L1))
        # sae-lens clips the gradient's norm at 1.0 before every Adam step; so does this run, to train alike
        trainer = Trainer(sae, lambda: next(batches), TrainConfig(steps=steps + WARMUP, lr=lr, log_every=10**9,
                                                                  clip_grad_norm=1.0))
        for _ in range(WARMUP):
            trainer.step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        seconds = time.perf_counter() - start
        sae.eval()
        with torch.no_grad():
            x_hat, _ = sae(held_out)
    else:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        if arch == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=EXPANSION * d_in, k=K))
        else:
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=EXPANSION * d_in, l1_coefficient=L1))
        cfg = SAETrainerConfig(total_training_samples=(steps + WARMUP) * BATCH, train_batch_size_samples=BATCH, lr=lr,
                               lr_end=lr)  # constant, as mechlib
        trainer = SAETrainer(cfg, sae, batches, save_checkpoint_fn=lambda **kw: None)
        for _ in range(WARMUP):
            trainer.step(next(batches))
            trainer.n_training_steps += 1
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(next(batches))
            trainer.n_training_steps += 1
        seconds = time.perf_counter() - start
        sae.eval()
        with torch.no_grad():
            x_hat = sae.decode(sae.encode(held_out))
    fvu = float((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
    print(json.dumps({"tokens_per_s": steps * BATCH / seconds, "fvu": fvu}))


if __name__ == "__main__":
    main()
