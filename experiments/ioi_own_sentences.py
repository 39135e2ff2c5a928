"""Item 2 experiment: six IOI sentences a learner might type. PYTHONPATH=. python experiments/ioi_own_sentences.py"""
import warnings
warnings.simplefilter("ignore")
from mechlib.loading import load_model
S = [("When Tom and Alice went to the park, Alice gave a ball to", " Tom", " Alice"),
     ("After the party, Bob and Kate went home. Kate gave a book to", " Bob", " Kate"),
     ("Bob and Kate were hungry, so Kate handed the bread to", " Bob", " Kate"),
     ("While Sam and Anna were reading at the library, Anna passed the letter to", " Sam", " Anna"),
     ("Then Mike and Jane talked for hours. Jane said goodbye to", " Mike", " Jane"),
     ("Before Peter and Mary went to the beach, Mary gave a drink to", " Peter", " Mary")]
for name in ("course", "course-bpe"):
    m = load_model(name, device="cpu")
    for s, io, sub in S:
        logits = m(s)[0, -1]
        d = (logits[m.to_single_token(io)] - logits[m.to_single_token(sub)]).item()
        print(f"{name:10} {d:+6.2f} top {m.to_string(int(logits.argmax()))!r:10} {s}")
