"""Item 2 experiment: IOI accuracy per held-out part. PYTHONPATH=. python experiments/ioi_by_part.py course"""
import sys, torch, collections
from mechlib import corpus
from mechlib.loading import load_model
from mechlib.course_eval import _ioi
name = sys.argv[1]
model = load_model(name, device="cpu")
gen = corpus.CorpusGenerator(777)
held = corpus.IOI_HELD_OUT_PARTS
docs = collections.defaultdict(list)
for kind in ("intro", "setting", "action"):
    for part in held[kind]:
        frames = [f for f in corpus.IOI_FRAMES["parts"] if (f.startswith(part + " ") if kind == "intro" else
                  any(part.replace("{X}", x).replace("{Y}", y) in f for x, y in (("{A}", "{B}"), ("{B}", "{A}"))))]
        docs[f"{kind}: {part}"] = [gen.ioi(gen.rng.choice(frames), with_answer=False) for _ in range(200)]
g2 = corpus.CorpusGenerator(778)
docs["place: library/beach"] = [g2.ioi(split="parts", with_answer=False) for _ in range(800)]
docs["place: library/beach"] = [d for d in docs["place: library/beach"] if any(w in d.words for w in held["place"])][:200]
for k, v in docs.items():
    acc, ld = _ioi(model, v)
    print(f"{name:10} {k:50} n={len(v):3} acc {acc:.3f} logit diff {ld:.2f}")
