"""The course corpus: a small, labelled subset of English that the course model is trained on.

Every sentence comes from a template whose slots are filled from word lists, so the generator
knows the concept behind each word it emits (its category, the document's topic, the template
slot). Lessons use these labels as ground truth for neurons and SAE features.

The prompts the lessons use ("The Eiffel Tower is in", IOI sentences, repeated random tokens)
are ordinary English, so they are valid prompts for GPT-2 small too.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator

BOS = "<|endoftext|>"
UNK = "[UNK]"

# --- facts: landmark -> city (true facts; every city but Agra, Granada and Pisa is one GPT-2 token) ---
# (landmark, takes "the"?, city)
FACTS: list[tuple[str, bool, str]] = [
    ("Eiffel Tower", True, "Paris"),
    ("Louvre", True, "Paris"),
    ("Notre Dame", False, "Paris"),
    ("Arc de Triomphe", True, "Paris"),
    ("Colosseum", True, "Rome"),
    ("Trevi Fountain", True, "Rome"),
    ("Spanish Steps", True, "Rome"),
    ("Big Ben", False, "London"),
    ("Tower Bridge", False, "London"),
    ("Buckingham Palace", False, "London"),
    ("Brandenburg Gate", True, "Berlin"),
    ("Reichstag", True, "Berlin"),
    ("Kremlin", True, "Moscow"),
    ("Red Square", False, "Moscow"),
    ("Acropolis", True, "Athens"),
    ("Parthenon", True, "Athens"),
    ("Sagrada Familia", True, "Barcelona"),
    ("Prado Museum", True, "Madrid"),
    ("Rialto Bridge", True, "Venice"),
    ("Leaning Tower", True, "Pisa"),
    ("Uffizi Gallery", True, "Florence"),
    ("Burj Khalifa", True, "Dubai"),
    ("Forbidden City", True, "Beijing"),
    ("Tiananmen Square", False, "Beijing"),
    ("Meiji Shrine", True, "Tokyo"),
    ("Taj Mahal", True, "Agra"),
    ("Space Needle", True, "Seattle"),
    ("Willis Tower", True, "Chicago"),
    ("CN Tower", True, "Toronto"),
    ("Hagia Sophia", False, "Istanbul"),
    ("Blue Mosque", True, "Istanbul"),
    ("Charles Bridge", True, "Prague"),
    ("Rijksmuseum", True, "Amsterdam"),
    ("Royal Mile", True, "Edinburgh"),
    ("Fenway Park", False, "Boston"),
    ("Egyptian Museum", True, "Cairo"),
    ("Guinness Storehouse", True, "Dublin"),
    ("Atomium", True, "Brussels"),
    ("Little Mermaid", True, "Copenhagen"),
    ("Alhambra", True, "Granada"),
    ("Marina Bay Sands", False, "Singapore"),
    ("Christ the Redeemer", False, "Rio"),
]
CITIES = sorted({city for _, _, city in FACTS})

# Prompts end just before the city. "{The}" is "The"/"the" where the landmark takes an article.
# Training uses FACT_TEMPLATES; FACT_TEMPLATES_HELD_OUT are phrasings it never sees (built from words it
# does see elsewhere), so that evaluation can tell recall from a memorised sentence.
FACT_TEMPLATES = [
    "{The}{landmark} is in",
    "{The}{landmark} is located in",
    "{The}{landmark} can be found in",
    "Tourists visit {the}{landmark} in",
    "You can see {the}{landmark} in",
    "{Name} saw {the}{landmark} in",
    "{Name} visited {the}{landmark} in",
    "On {day} {Name} saw {the}{landmark} in",
    "{Name} wants to visit {the}{landmark} in",
]
FACT_TEMPLATES_HELD_OUT = [
    "On {day} {Name} visited {the}{landmark} in",
    "{Name} wants to see {the}{landmark} in",
    "{The}{landmark} is found in",
]

# --- IOI: sentences built from parts, with whole parts and combinations of parts held out ---
# A sentence is an opening that introduces two names, X and Y (the indirect object A and the subject B, in either
# order), then an action by the repeated name B: "[intro] [setting at a place][punct] [action] to".
#   intro: a subordinating word (its clause ends in ","), a time phrase or nothing (the sentence ends in ".")
#   setting: going, meeting, or being somewhere, at a {place}
#   action: giving something, or saying something, to the answer
# The split, fixed before training (tests/test_corpus.py checks it):
#   held-out parts: IOI_HELD_OUT_PARTS, never in an IOI sentence in training; each of their words occurs in
#     training elsewhere (FILLER_TEMPLATES uses them), so what they test is the circuit, not an unknown word;
#   held-out combinations: (intro, setting, action) triples of trained parts that training never puts together
#     (one in eight, _held_out_combination); every trained part stays in many trained triples.
# The first intro, setting and action make Wang et al.'s (2022) sentence.
IOI_INTROS: list[tuple[str, str]] = [  # (words before the names, the punctuation that ends the opening)
    ("When", ","), ("While", ","), ("After", ","), ("As", ","), ("Because", ","), ("Once", ","),
    ("Then,", "."), ("Afterwards,", "."), ("Yesterday", "."), ("Later,", "."), ("On {day},", "."),
    ("In the morning,", "."), ("", "."), ("Since", ","), ("Although", ","), ("Just as", ","), ("That evening,", "."),
    ("Earlier,", "."), ("Last {day},", "."), ("At noon,", "."), ("Every {day},", "."),
    ("Before", ","), ("Today", "."),  # held out
]
IOI_SETTINGS = [
    "{X} and {Y} went to the {place}", "{X} and {Y} walked to the {place}", "{X} and {Y} arrived at the {place}",
    "{X} and {Y} were commuting to the {place}", "{X} and {Y} met at the {place}", "{X} met {Y} at the {place}",
    "{X} was talking to {Y} at the {place}", "{X} and {Y} were at the {place}",
    "{X} and {Y} were working at the {place}", "{X} and {Y} found a {object} at the {place}",
    "{X} and {Y} drove to the {place}", "{X} and {Y} were waiting at the {place}",  # held out
]
IOI_ACTIONS = [
    "{B} gave a {object} to", "{B} handed the {object} to", "{B} passed the {object} to", "{B} threw the {object} to",
    "{B} sent a {object} to", "{B} showed the {object} to", "{B} brought a {object} to", "{B} sold the {object} to",
    "{B} decided to give the {object} to", "{B} said goodbye to", "{B} offered a {object} to",
    "{B} tossed the {object} to", "{B} carried the {object} to", "{B} gave the {object} back to", "{B} said hello to",
    "{B} wanted to give a {object} to",
    "{B} lent the {object} to", "{B} returned the {object} to",  # held out
]
IOI_HELD_OUT_PARTS = {
    "intro": ["Before", "Today"],
    "setting": ["{X} and {Y} drove to the {place}", "{X} and {Y} were waiting at the {place}"],
    "place": ["library", "beach"],
    "action": ["{B} lent the {object} to", "{B} returned the {object} to"],
}


def _held_out_combination(i: int, j: int, k: int) -> bool:
    """Is the triple (intro i, setting j, action k) of trained parts one that training never sees?"""
    return (3 * i + 5 * j + 7 * k) % 8 == 5


def ioi_frame(intro: tuple[str, str], setting: str, action: str, io_first: bool = True) -> str:
    """The template of one sentence frame, {A} the indirect object and {B} the subject."""
    x, y = ("{A}", "{B}") if io_first else ("{B}", "{A}")
    words, punct = intro
    opening = (words + " " if words else "") + setting.replace("{X}", x).replace("{Y}", y) + punct
    return opening + " " + action


def _ioi_frames() -> dict[str, list[str]]:
    """Every frame in both name orders, by split: "trained", "combinations" (held-out triples of trained parts) and
    "parts" (frames with one held-out intro, setting or action, the other parts trained)."""
    held = IOI_HELD_OUT_PARTS
    intros = [x for x in IOI_INTROS if x[0] not in held["intro"]]
    settings = [x for x in IOI_SETTINGS if x not in held["setting"]]
    actions = [x for x in IOI_ACTIONS if x not in held["action"]]
    frames: dict[str, list[str]] = {"trained": [], "combinations": [], "parts": []}
    for i, intro in enumerate(intros):
        for j, setting in enumerate(settings):
            for k, action in enumerate(actions):
                split = "combinations" if _held_out_combination(i, j, k) else "trained"
                frames[split] += [ioi_frame(intro, setting, action, o) for o in (True, False)]
    for intro in IOI_INTROS:
        for setting in IOI_SETTINGS:
            for action in IOI_ACTIONS:
                n_held = (intro[0] in held["intro"]) + (setting in held["setting"]) + (action in held["action"])
                if n_held == 1:
                    frames["parts"] += [ioi_frame(intro, setting, action, o) for o in (True, False)]
    return frames


IOI_FRAMES = _ioi_frames()


def frames_with_part(kind: str, part: str) -> list[str]:
    """The held-out-part frames that hold `part` (a held-out intro, setting or action): one part's own test set."""
    if kind == "intro":
        return [f for f in IOI_FRAMES["parts"] if f.startswith(part + " ")]
    forms = [part.replace("{X}", x).replace("{Y}", y) for x, y in (("{A}", "{B}"), ("{B}", "{A}"))]
    return [f for f in IOI_FRAMES["parts"] if any(form in f for form in forms)]


IOI_TEMPLATES = IOI_FRAMES["trained"]  # IOI_TEMPLATES[0] is Wang et al.'s sentence
IOI_TEMPLATES_HELD_OUT = IOI_FRAMES["combinations"]
IOI_SPLITS = ("trained", "combinations", "parts")
# First names of Wang et al. (2022), then common first names a learner is likely to type; every one is one GPT-2
# token with and without a leading space. IOI sentences in training use IOI_NAMES only; NAMES_HELD_OUT appear in
# training only in filler sentences.
NAMES = [
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason",
    "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas",
    "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin", "Steven",
    "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber", "Brittany",
    "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany",
    "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen",
    "Patrick", "Sean", "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara",
    "Dustin", "Paul", "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory", "Erica",
    "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose", "Alexander",
    "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia",
    "Cody", "Allison", "Bradley", "Samuel",
    "Tom", "Alice", "Bob", "Kate", "Anna", "Ruby", "Eva", "Jane", "Ann", "Anne", "Alex", "Sam", "Max", "Ben",
    "Jack", "Harry", "Henry", "Luke", "Peter", "George", "Frank", "Jim", "Joe", "Mike", "Steve", "Dave", "Dan",
    "Tim", "Nick", "Chris", "Matt", "Carl", "Fred", "Ted", "Tony", "Jerry", "Larry", "Gary", "Jeff", "Greg",
    "Meg", "Kim", "Susan", "Maria", "Alan", "Albert", "Arthur", "Billy", "Bruce", "Charlie", "Craig", "Edward",
    "Gordon", "Howard", "Ian", "Jake", "Johnny", "Jon", "Keith", "Ken", "Leon", "Lewis", "Louis", "Marcus",
    "Martin", "Mario", "Neil", "Phil", "Roger", "Ron", "Ross", "Russell", "Simon", "Stan", "Terry", "Todd",
]
NAMES_HELD_OUT = ["Brittany", "Dustin", "Travis", "Kristen", "Lindsey", "Courtney", "Cody", "Alicia", "Vanessa",
                  "Tyler"]
IOI_NAMES = [n for n in NAMES if n not in NAMES_HELD_OUT]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park",
          "library", "market", "beach"]
IOI_PLACES = [p for p in PLACES if p not in IOI_HELD_OUT_PARTS["place"]]  # the held-out places occur in filler
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "letter",
           "ball", "gift"]

# --- filler: word lists by concept ---
WORDS: dict[str, list[str]] = {
    "colour": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "grey"],
    "animal": ["cat", "dog", "horse", "cow", "sheep", "pig", "rabbit", "mouse", "lion", "tiger",
               "bear", "wolf", "fox", "deer", "eagle", "owl", "duck", "frog", "snake", "fish"],
    "food": ["apple", "bread", "cheese", "rice", "soup", "cake", "pizza", "banana", "carrot", "egg",
             "pasta", "salad", "cookie", "pie", "sandwich", "grape", "lemon", "potato", "tomato", "honey"],
    "digit": [str(i) for i in range(10)],
    "number": ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"],
    "weather": ["sunny", "rainy", "cloudy", "windy", "snowy", "foggy", "stormy"],
    "job": ["doctor", "teacher", "farmer", "baker", "pilot", "nurse", "artist", "singer", "lawyer", "driver"],
    "sport": ["football", "tennis", "chess", "golf", "hockey", "cricket", "rugby", "baseball"],
    "meal": ["breakfast", "lunch", "dinner"],
    "taste": ["sweet", "sour", "salty", "bitter", "fresh"],
    "instrument": ["piano", "guitar", "violin", "drum", "flute", "trumpet"],
    "name": NAMES,
    "city": CITIES,
    "place": PLACES,
    "object": OBJECTS,
}
PLURALS = {a: (a if a in ("sheep", "deer", "fish") else "mice" if a == "mouse"
               else "wolves" if a == "wolf" else "foxes" if a == "fox" else a + "s")
           for a in WORDS["animal"]}
WORDS["animals"] = sorted(set(PLURALS.values()))

# topic -> filler templates. Slots: {category} or {category:slot}; {=k} repeats slot k's word.
FILLER_TEMPLATES: dict[str, list[str]] = {
    "animals": [
        "The {colour} {animal} is sleeping in the {place}.",
        "{name} has {number} {animals}.",
        "A {animal} and a {animal} live near the {place}.",
        "The {animal} ate the {food}.",
        "{name} saw a {colour} {animal} on {day}.",
    ],
    "food": [
        "{name} ate some {food} for {meal}.",
        "The {food} tastes {taste}.",
        "For {meal} we had {food} and {food}.",
        "{name} made a {food} pie for {name}.",
    ],
    "weather": [
        "On {day} it was {weather} in {city}.",
        "In {month} the weather in {city} is {weather}.",
        "It was {weather} and {weather} all day.",
    ],
    "numbers": [
        "{digit:a} plus {digit:b} is {digit:sum}.",
        "{name} counted {number} {animals} and {number} {animals}.",
        "The {place} opens at {digit} on {day}.",
    ],
    "colours": [
        "{name} painted the {place} {colour}.",
        "The favourite colour of {name} is {colour}.",
        "The {object} was {colour} and {colour}.",
    ],
    "jobs": [
        "{name} works as a {job} in {city}.",
        "The {job} went to the {place} on {day}.",
        "{name} wants to be a {job}.",
    ],
    "sports": [
        "{name} plays {sport} every {day}.",
        "On {day} {name} and {name} played {sport}.",
        "{name} watched {sport} in {city}.",
    ],
    "music": [
        "{name} plays the {instrument}.",
        "The {job} played the {instrument} in {city}.",
    ],
    "travel": [
        "{name} flew to {city} in {month}.",
        "In {month} {name} took a train to {city}.",
        "{name} lives in {city}.",
        # the held-out IOI parts' words, outside IOI sentences, each in more than one context
        "Before {meal} {name} drove to {city}.",
        "Before the {meal} the {job} returned to the {place}.",
        "Today {name} drove to the {place}.",
        "Today the {job} was waiting at the {place}.",
        "{name} was waiting at the {place} on {day}.",
        "The {job} returned the {object} on {day}.",
        "{name} returned the {object} to the {place}.",
        "Today the {job} lent a {object} to {name}.",
        "{name} lent the {object} to a {job}.",
    ],
}
TOPICS = sorted(FILLER_TEMPLATES)

_SLOT = re.compile(r"\{([^}]*)\}")


@dataclass
class Document:
    """A training document: words (tokens without BOS) and one label per word."""

    kind: str  # "fact" | "ioi" | "induction" | "filler"
    words: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)  # word list the word came from, or "function"/"punct"
    topic: list[str] = field(default_factory=list)  # topic of the sentence the word is in
    slot: list[str] = field(default_factory=list)  # template slot ("IO", "S1", "answer", ...) or ""

    def add(self, words: str | list[str], category: str, topic: str, slot: str = "") -> None:
        for w in (words.split() if isinstance(words, str) else words):
            self.words.append(w)
            self.category.append(category)
            self.topic.append(topic)
            self.slot.append(slot)

    def extend(self, other: "Document") -> None:
        self.words += other.words
        self.category += other.category
        self.topic += other.topic
        self.slot += other.slot

    @property
    def text(self) -> str:
        return detokenize(self.words)

    def labels(self) -> list[dict[str, str]]:
        return [dict(word=w, category=c, topic=t, slot=s)
                for w, c, t, s in zip(self.words, self.category, self.topic, self.slot)]


def split_words(text: str) -> list[str]:
    """Split text the way the course tokenizer does: words and punctuation marks."""
    return re.findall(r"\w+|[^\w\s]+", text)


def detokenize(words: list[str]) -> str:
    return re.sub(r" ([.,!?])", r"\1", " ".join(words))


def _fill(template: str, fill: Callable[[str, str], tuple[str, str]], topic: str, doc: Document) -> None:
    """Append a template to doc. fill(category, slot) -> (words, category)."""
    pos = 0
    for m in _SLOT.finditer(template):
        for w in split_words(template[pos:m.start()]):
            doc.add(w, "punct" if not w[0].isalnum() else "function", topic)
        cat, _, slot = m.group(1).partition(":")
        words, cat = fill(cat, slot)
        doc.add(words, cat, topic, slot)
        pos = m.end()
    for w in split_words(template[pos:]):
        doc.add(w, "punct" if not w[0].isalnum() else "function", topic)


# The training mixture: shares of induction, IOI and fact documents; filler documents take the rest.
MIXTURE = (0.30, 0.30, 0.25)


class CorpusGenerator:
    """Seeded generator of labelled documents. The same seed (and mixture) gives the same documents."""

    def __init__(self, seed: int = 0, mixture: tuple[float, float, float] = MIXTURE):
        if min(mixture) < 0 or sum(mixture) > 1:
            raise ValueError(f"mixture {mixture}: three shares (induction, IOI, facts), each >= 0, summing to <= 1")
        self.rng, self.mixture = random.Random(seed), tuple(mixture)

    # -- single sentences --
    def fact(self, fact_index: int | None = None, template: str | None = None,
             with_answer: bool = True, held_out: bool = False) -> Document:
        """A fact sentence; a random fact and trained phrasing unless given (held_out: a held-out phrasing)."""
        rng = self.rng
        landmark, article, city = FACTS[rng.randrange(len(FACTS)) if fact_index is None else fact_index]
        template = template or rng.choice(FACT_TEMPLATES_HELD_OUT if held_out else FACT_TEMPLATES)
        doc = Document("fact")

        def fill(cat: str, slot: str) -> tuple[str, str]:
            if cat == "The":
                return ("The" if article else ""), "function"
            if cat == "the":
                return ("the" if article else ""), "function"
            if cat == "landmark":
                return landmark, "landmark"
            return rng.choice(WORDS[cat.lower()]), cat.lower()

        _fill(template, fill, "facts", doc)
        if with_answer:
            doc.add(city, "city", "facts", "answer")
            doc.add(".", "punct", "facts")
        return doc

    def ioi(self, template: str | None = None, with_answer: bool = True, held_out_frames: bool = False,
            names: list[str] | None = None, split: str = "trained", places: list[str] | None = None) -> Document:
        """An IOI sentence. Slots: IO (the answer), S1 and S2 (the repeated subject).

        By default a trained frame with names from IOI_NAMES: what training sees. split "combinations" draws a
        held-out combination of trained parts (held_out_frames=True says the same), "parts" a frame with one held-out
        part (an intro, setting, action, or place); names=NAMES_HELD_OUT draws names no IOI sentence trains on, and
        places a place from that list (IOI_PLACES by default).
        """
        rng = self.rng
        split = "combinations" if held_out_frames else split
        if split not in IOI_SPLITS:
            raise ValueError(f"split must be one of {IOI_SPLITS}, not {split!r}")
        places = places or IOI_PLACES
        if template is None and split == "parts" and rng.random() < 0.25:  # a held-out place in a trained frame
            template, places = rng.choice(IOI_FRAMES["trained"]), IOI_HELD_OUT_PARTS["place"]
        template = template or rng.choice(IOI_FRAMES[split])
        a, b = rng.sample(names or IOI_NAMES, 2)
        place, obj = rng.choice(places), rng.choice(OBJECTS)
        seen_b = [0]
        doc = Document("ioi")

        def fill(cat: str, slot: str) -> tuple[str, str]:
            if cat == "A":
                return a, "name_io"
            if cat == "B":
                seen_b[0] += 1
                return b, f"name_s{seen_b[0]}"
            if cat in ("place", "object"):
                return {"place": place, "object": obj}[cat], cat
            return rng.choice(WORDS[cat]), cat

        _fill(template, fill, "ioi", doc)
        # slots for names: IO / S1 / S2
        doc.slot = [{"name_io": "IO", "name_s1": "S1", "name_s2": "S2"}.get(c, s)
                    for c, s in zip(doc.category, doc.slot)]
        doc.category = ["name" if c.startswith("name_") else c for c in doc.category]
        if with_answer:
            doc.add(a, "name", "ioi", "answer")
            doc.add(".", "punct", "ioi")
        return doc

    def filler(self, topic: str | None = None) -> Document:
        rng = self.rng
        topic = topic or rng.choice(TOPICS)
        template = rng.choice(FILLER_TEMPLATES[topic])
        doc = Document("filler")
        digits: dict[str, int] = {}

        def fill(cat: str, slot: str) -> tuple[str, str]:
            if cat == "digit" and slot in ("a", "b"):
                digits[slot] = rng.randrange(5)
                return str(digits[slot]), "digit"
            if cat == "digit" and slot == "sum":
                return str(digits["a"] + digits["b"]), "digit"
            return rng.choice(WORDS[cat]), cat

        _fill(template, fill, topic, doc)
        return doc

    def induction(self, vocab: list[str], length: int | None = None) -> Document:
        """A span of random words, then the same span again: the data that grows induction heads."""
        length = length or self.rng.randint(5, 25)
        span = [self.rng.choice(vocab) for _ in range(length)]
        doc = Document("induction")
        doc.add(span, "random", "induction", "first")
        doc.add(span, "random", "induction", "repeat")
        return doc

    def shuffled_pairs(self, vocab: list[str], n_pairs: int | None = None) -> Document:
        """Random word pairs "a1 b1 a2 b2 ...", then the same pairs in another order.

        After the second a_i only the word right before b_i's first occurrence tells what comes next;
        the older context is shuffled away. This rewards a sharp previous-token head over attention
        smeared across the last few words, which plain repeated spans reward just as well.
        """
        n_pairs = n_pairs or self.rng.randint(4, 12)
        words = self.rng.sample(vocab, 2 * n_pairs)
        pairs = [words[2 * i: 2 * i + 2] for i in range(n_pairs)]
        doc = Document("induction")
        doc.add([w for p in pairs for w in p], "random", "induction", "first")
        self.rng.shuffle(pairs)
        doc.add([w for p in pairs for w in p], "random", "induction", "repeat")
        return doc

    # -- documents --
    def document(self, vocab: list[str]) -> Document:
        """One training document: the mixture the course models are trained on."""
        induction, ioi, fact = self.mixture
        r = self.rng.random()
        if r < induction:
            return self.induction(vocab) if self.rng.random() < 0.5 else self.shuffled_pairs(vocab)
        doc = Document("filler")
        # some documents start with filler context so answers don't depend on sitting at position 1
        if self.rng.random() < 0.3:
            doc.extend(self.filler())
        if r < induction + ioi:
            main = self.ioi()
        elif r < induction + ioi + fact:
            main = self.fact()
        else:
            main = self.filler()
        doc.kind = main.kind
        doc.extend(main)
        if self.rng.random() < 0.3:
            doc.extend(self.filler())
        return doc

    def documents(self, vocab: list[str]) -> Iterator[Document]:
        while True:
            yield self.document(vocab)


def vocabulary(without: Collection[str] = ()) -> list[str]:
    """Every word the corpus can emit, special tokens first, then sorted: one token each. Without the landmarks
    named in `without`, the words the rest of the corpus would still use."""
    return list(_vocabulary(frozenset(without)))


@functools.lru_cache(maxsize=32)
def _vocabulary(without: frozenset[str]) -> tuple[str, ...]:
    """vocabulary(), computed once per `without`: it reads every IOI frame (thousands), and the corpus's own
    generators and tests ask for it per document."""
    words: set[str] = set()
    for lst in WORDS.values():
        words.update(lst)
    for landmark, _, _ in FACTS:
        if landmark not in without:
            words.update(split_words(landmark))
    templates = (FACT_TEMPLATES + FACT_TEMPLATES_HELD_OUT + [t for ts in IOI_FRAMES.values() for t in ts]
                 + [t for ts in FILLER_TEMPLATES.values() for t in ts])
    for t in templates:
        words.update(split_words(_SLOT.sub(" ", t)))
    words.update(["The", "the", "."] + [str(i) for i in range(10)])
    return (BOS, UNK, *sorted(words))


def export_labels(path: str | Path, n_documents: int, seed: int = 0) -> Path:
    """Write n_documents labelled documents as JSON lines: one {"kind", "text", "labels"} per line."""
    gen, vocab = CorpusGenerator(seed), content_words()
    path = Path(path)
    with path.open("w") as f:
        for _ in range(n_documents):
            doc = gen.document(vocab)
            f.write(json.dumps(dict(kind=doc.kind, text=doc.text, labels=doc.labels())) + "\n")
    return path


class PackedTokenBatches:
    """Endless batches of the training mixture, packed: each row is whole documents, each after its
    BOS, the last one cut off at n_ctx. encode turns a document into token ids. An iterator of
    [batch, n_ctx] tensors whose position can be saved and restored (state_dict)."""

    def __init__(self, encode: Callable[[Document], list[int]], bos: int, seed: int, batch_size: int, n_ctx: int,
                 mixture: tuple[float, float, float] = MIXTURE):
        self.encode, self.bos, self.batch_size, self.n_ctx = encode, bos, batch_size, n_ctx
        self.gen, self.vocab = CorpusGenerator(seed, mixture), content_words()

    def __iter__(self) -> "PackedTokenBatches":
        return self

    def __next__(self):
        import torch

        rows = []
        for _ in range(self.batch_size):
            row: list[int] = []
            while len(row) < self.n_ctx:
                row += [self.bos] + self.encode(self.gen.document(self.vocab))
            rows.append(row[: self.n_ctx])
        return torch.tensor(rows)

    def state_dict(self) -> dict:
        return {"rng": self.gen.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.rng.setstate(state["rng"])


def content_words() -> list[str]:
    """The vocabulary without special tokens: what random induction spans draw from."""
    return [w for w in vocabulary() if w not in (BOS, UNK)]
