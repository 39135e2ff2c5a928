"""One timed SAE training run, for benchmarks/sae_throughput.py; runs in either environment.

    python benchmarks/_sae_worker.py mechlib|saelens april|topk ACTS.safetensors STEPS EVAL_EVERY

Both trainers start from the same weights (the file's unit `directions` [d_sae, d_in], scaled to
length 0.1 as sae-lens initialises them; the encoder is the decoder's transpose; zero biases) and
train the same loss on the same batches. Prints one JSON line: tokens per second over the training
steps, and every EVAL_EVERY steps the training seconds so far with FVU and L0 on the held-out
activations (evaluation time is not counted).
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file

BATCH, K, L1, LR, INIT_NORM = 4096, 16, 5.0, 1e-3, 0.1


def main() -> None:
    backend, arch, path, steps, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    torch.manual_seed(0)
    data = load_file(path)
    train, held_out, directions = data["train"], data["held_out"], data["directions"]  # [n, d_in] [m, d_in] [d_sae, d_in]
    d_sae, d_in = directions.shape
    n_batches = len(train) // BATCH
    batches = iter([train[(i % n_batches) * BATCH:(i % n_batches + 1) * BATCH] for i in range(steps)])
    W_dec, W_enc = INIT_NORM * directions, INIT_NORM * directions.T.contiguous()
    if backend == "mechlib":
        from mechlib.sae import SAEConfig, Trainer, TrainConfig, make_sae

        sae = make_sae(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, k=K, l1_coefficient=L1))
        with torch.no_grad():  # TopK trains a decoder of free length and reads unit rows from it
            (sae.W_dec_v if arch == "topk" else sae.W_dec).copy_(W_dec)
            (sae.W_enc_v if arch == "topk" else sae.W_enc).copy_(W_enc)
        # sae-lens clips the gradient's norm at 1.0 before every Adam step; so does this run, to train alike
        trainer = Trainer(sae, lambda: next(batches), TrainConfig(steps=steps, lr=LR, log_every=10**9,
                                                                  clip_grad_norm=1.0))

        def step():
            trainer.step()

        def reconstruct(x):  # -> (x_hat, latents)
            return sae(x)
    else:
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        if arch == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=K))
        else:  # "standard" in sae-lens is the April update: decoder-norm-weighted L1; mechlib's april centres nothing
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=L1,
                                                                apply_b_dec_to_input=False))
        with torch.no_grad():
            sae.W_dec.copy_(W_dec)
            sae.W_enc.copy_(W_enc)
        cfg = SAETrainerConfig(total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=LR,
                               lr_end=LR)  # constant, as mechlib
        trainer = SAETrainer(cfg, sae, batches, save_checkpoint_fn=lambda **kw: None)

        def step():
            trainer.step(next(batches))
            trainer.n_training_steps += 1

        def reconstruct(x):  # -> (x_hat, latents)
            z = sae.encode(x)
            return sae.decode(z), z

    curve, seconds = [], 0.0
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step()
        seconds += time.perf_counter() - start
        if i % every == 0 or i == steps:
            sae.eval()
            with torch.no_grad():
                x_hat, z = reconstruct(held_out)
            sae.train()
            fvu = float((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
            curve.append({"step": i, "seconds": seconds, "fvu": fvu, "l0": float((z > 0).float().sum(-1).mean())})
    print(json.dumps({"tokens_per_s": steps * BATCH / seconds, "curve": curve}))


if __name__ == "__main__":
    main()
