#!/usr/bin/env python3
"""Build the small English pretraining corpus for the tiny default model.

Run from the repository root:

    python data/pretrain/build_corpus.py

It reads the hand-written passages in data/pretrain/passages.txt, adds many
paragraphs made by a small compositional generator (hand-written sentence
templates and slot fillers defined below), splits the documents at random
(fixed seed) into train.txt and heldout.txt, and writes both files next to this
script. Standard library only. The output is byte-for-byte reproducible.

Documents are separated by one blank line. All text is ASCII.
"""

import os
import random
import sys

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
PASSAGES_FILE = os.path.join(HERE, "passages.txt")
TRAIN_FILE = os.path.join(HERE, "train.txt")
HELDOUT_FILE = os.path.join(HERE, "heldout.txt")

# Total size (train + heldout) the generator fills up to, in bytes.
TARGET_TOTAL_BYTES = 2_650_000
HELDOUT_FRACTION = 0.03


# ---------------------------------------------------------------------------
# Small grammar helpers
# ---------------------------------------------------------------------------

def article(word):
    w = word.lower()
    if w.startswith(("uni", "use", "usu", "eu", "one ", "once")):
        return "a"
    if w.startswith(("hour", "honest", "honour")):
        return "an"
    return "an" if w[0] in "aeiou" else "a"


def a(phrase):
    """Prefix a noun phrase with the right indefinite article."""
    return article(phrase) + " " + phrase


_IRREGULAR_3RD = {"have": "has", "be": "is", "do": "does", "go": "goes"}


def third(vp):
    """Turn a base-form verb phrase into third person singular present."""
    w, _, rest = vp.partition(" ")
    if w in _IRREGULAR_3RD:
        v = _IRREGULAR_3RD[w]
    elif w.endswith(("s", "sh", "ch", "x", "z", "o")):
        v = w + "es"
    elif w.endswith("y") and w[-2] not in "aeiou":
        v = w[:-1] + "ies"
    else:
        v = w + "s"
    return v + (" " + rest if rest else "")


def cap(s):
    return s[:1].upper() + s[1:]


def join_list(items):
    items = list(items)
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def sample_in_order(rng, items, k):
    """Pick k items, keeping their original order."""
    idx = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------
# People and shared slot fillers
# ---------------------------------------------------------------------------

FEMALE_NAMES = (
    "Anna Maya Sofia Priya Amira Grace Lena Rosa Hannah Chloe Fatima Mei Aisha "
    "Nina Clara Ruth Zara Ella Leila Ines Yuki Olga Sara Tara Julia Alice Nadia "
    "Esther Lucy Kemi Asha Mira Beth Carmen Freya Iris Joy Lily Martha Naomi "
    "Rania Eva Ada Helen Jana Ling Rita Vera Amina Dora"
).split()
MALE_NAMES = (
    "Tom Ben Samir Daniel Jonah Ahmed Kenji Carlos Olu Leo Omar David Sam Max "
    "Luca Hugo Ravi Felix Jack Noah Ivan Kofi Marco Paul Peter Hassan Arjun Theo "
    "Oscar Adam Ethan Jamal Tariq Owen Finn Diego Henry Luis Pedro Yusuf Tomas "
    "Malik Chen Emil Rui Karl Simon Joel Amir Victor"
).split()
PEOPLE = [(n, "f") for n in FEMALE_NAMES] + [(n, "m") for n in MALE_NAMES]
PRONOUNS = {
    "f": {"p": "she", "P": "She", "poss": "her", "Poss": "Her", "obj": "her"},
    "m": {"p": "he", "P": "He", "poss": "his", "Poss": "His", "obj": "him"},
    "i": {"p": "I", "P": "I", "poss": "my", "Poss": "My", "obj": "me"},
}

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September "
          "October November December").split()
SEASONS = ["spring", "summer", "autumn", "winter"]
WEATHER_ADJ = ["sunny", "cold", "windy", "rainy", "grey", "bright", "warm",
               "frosty", "quiet", "cloudy", "clear", "mild", "wet", "calm"]
CLOCK = ["six o'clock", "half past six", "seven o'clock", "half past seven",
         "eight o'clock", "a quarter to seven", "a quarter past eight"]
FRUIT = ["apples", "oranges", "pears", "plums", "cherries", "grapes", "bananas",
         "peaches", "strawberries", "lemons", "apricots", "raspberries"]
VEG = ["carrots", "potatoes", "onions", "tomatoes", "green beans", "peppers",
       "mushrooms", "leeks", "peas", "courgettes", "beetroots", "cucumbers"]
SEED_VEG = ["carrot", "bean", "pea", "lettuce", "onion", "radish", "spinach",
            "pumpkin", "sunflower", "tomato"]
TOPICS = ["birds", "the ocean", "old ships", "gardening", "the stars", "cooking",
          "trains", "volcanoes", "music", "local history", "the human body",
          "mountains", "insects", "the weather", "ancient Egypt", "dinosaurs",
          "famous inventors", "rivers", "the moon", "healthy eating", "forests",
          "wild flowers", "castles", "bridges", "the planets", "bees"]
DISHES = ["vegetable soup", "rice and beans", "pasta with tomato sauce",
          "a simple curry", "fish with potatoes", "an omelette",
          "noodles with vegetables", "a big salad", "a chicken stew",
          "lentil soup", "baked potatoes", "a vegetable pie", "fried rice",
          "a bean stew", "pancakes"]
RELATIVES = ["mother", "father", "sister", "brother", "grandmother",
             "grandfather", "aunt", "uncle", "cousin", "best friend"]
DRINKS = ["a cup of tea", "a cup of coffee", "a glass of milk",
          "a mug of hot chocolate", "a glass of orange juice", "a glass of water"]
ITEMS = ["umbrella", "scarf", "gloves", "library card", "lunch box",
         "water bottle", "notebook", "shopping list", "hat", "phone charger"]
PLANS = ["finish my book", "call my sister", "go swimming", "tidy the garden",
         "bake some bread", "visit my grandparents", "clean the kitchen",
         "write some letters", "go for a long walk", "start a new jigsaw puzzle",
         "practise the piano", "mend my old coat", "plant some herbs",
         "go to the library", "cook something new", "ring my old friend Sue",
         "sort out my cupboard", "try the new swimming pool",
         "help at the community garden", "learn a new song"]
FEELINGS = ["happy", "tired", "calm", "proud", "a little sad", "cheerful",
            "relaxed", "thankful", "sleepy", "hopeful", "content", "busy but happy"]


def person(rng, exclude=()):
    while True:
        name, g = rng.choice(PEOPLE)
        if name not in exclude:
            return name, g


def slot_fillers(rng):
    """Random lexical fillers for one sentence."""
    n = rng.randint(2, 9)
    return {
        "fruit": rng.choice(FRUIT),
        "veg": rng.choice(VEG),
        "seedveg": rng.choice(SEED_VEG),
        "topic": rng.choice(TOPICS),
        "dish": rng.choice(DISHES),
        "relative": rng.choice(RELATIVES),
        "relative2": rng.choice(RELATIVES[:8]),
        "drink": rng.choice(DRINKS),
        "item": rng.choice(ITEMS),
        "day": rng.choice(DAYS),
        "month": rng.choice(MONTHS),
        "season": rng.choice(SEASONS),
        "weather": rng.choice(WEATHER_ADJ),
        "clock": rng.choice(CLOCK),
        "num": ["two", "three", "four", "five", "six", "seven", "eight", "nine"][n - 2],
        "feeling": rng.choice(FEELINGS),
        "plan": rng.choice(PLANS),
        "hobby": rng.choice(HOBBIES),
    }


# ---------------------------------------------------------------------------
# Daily-life scenes, used by stories, diaries and letters (past tense)
# Each act is a past-tense verb phrase that follows a subject.
# ---------------------------------------------------------------------------

SCENES = [
    dict(who="any", times=("morning",),
         go=["got up and opened the curtains", "got out of bed slowly",
             "woke up before the alarm", "got up and stretched"],
         acts=["had {drink}", "ate toast with jam", "had a bowl of porridge with honey",
               "fed the cat", "watered the plants on the window sill",
               "packed {poss} bag for the day", "listened to the news on the radio",
               "made sandwiches for lunch", "ate breakfast with {poss} family",
               "brushed {poss} teeth and got dressed", "read a few pages of {poss} book",
               "ate a boiled egg and some bread", "looked out of the window at the weather"],
         obs=["The kitchen was warm and smelled of toast.", "Outside, the birds were singing.",
              "The house was still quiet.", "The radio played soft music.",
              "Rain tapped gently on the window.", "The sun was just coming up over the roofs."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the market", "walked to the market", "took the bus to the market",
             "cycled to the market"],
         acts=["bought a bag of {fruit}", "chose some fresh {veg}", "tasted a piece of warm bread",
               "chatted with the woman who sold cheese", "found a second-hand book about {topic}",
               "bought flowers for {poss} {relative}", "met {friend} by the fruit stall",
               "bought some {fruit} and a jar of honey", "looked at the old clocks and lamps on one stall"],
         obs=["The market was busy and noisy.", "Stall owners called out their prices.",
              "The air smelled of fresh bread and coffee.", "There were baskets of {fruit} everywhere.",
              "A man was playing the violin near the fountain."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the park", "walked to the park", "went for a walk in the park",
             "cycled to the park"],
         acts=["walked slowly around the pond", "sat on a bench and read {poss} book",
               "played catch with {friend}", "watched children flying kites",
               "took photos of the flowers", "counted the ducks on the pond",
               "jogged two laps of the path", "ate a picnic lunch under a tree",
               "met {friend} and {fposs} dog by the gate", "listened to the band play in the bandstand"],
         obs=["The grass was still wet with dew.", "A dog chased a red ball across the grass.",
              "The trees were full of birds.", "The flower beds were bright with colour.",
              "The park was full of families.", "A light wind moved the leaves."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the library", "walked to the library", "stopped at the library"],
         acts=["returned two books", "borrowed a book about {topic}",
               "read the newspaper in a quiet corner", "asked the librarian for help finding a map",
               "used a computer to print a letter", "found a new book about {topic}",
               "sat at a big table and studied for an hour", "looked at old photos of the town"],
         obs=["The library was quiet and warm.", "The shelves were full of new books.",
              "A group of small children were listening to a story.",
              "The librarian smiled and said hello."]),
    dict(who="child", times=("morning",),
         go=["went to school", "walked to school with {friend}", "took the bus to school",
             "cycled to school with {poss} {relative2}"],
         acts=["listened to a lesson about {topic}", "worked on a project with {friend}",
               "played football at break", "ate lunch with {poss} friends",
               "practised spelling words", "painted a picture of a lighthouse",
               "read a story aloud to the class", "did a science experiment with magnets",
               "learned a new song in music", "answered a hard maths question"],
         obs=["The classroom was bright and noisy.", "The teacher was in a good mood.",
              "Everyone was excited about the school trip next week.",
              "It was raining, so break time was indoors."]),
    dict(who="adult", times=("morning", "afternoon"),
         go=["went to work", "took the train to work", "cycled to the office",
             "walked to work"],
         acts=["answered a long list of emails", "had a meeting with {poss} team",
               "finished an important report", "helped a new colleague with a problem",
               "ate lunch at {poss} desk", "fixed a problem with the printer",
               "phoned a customer about an order", "planned the work for the next week",
               "had coffee with {friend} from the office"],
         obs=["The office was busy all morning.", "Everyone was working hard.",
              "The phones rang all day.", "Someone had brought a cake for a birthday."]),
    dict(who="any", times=("afternoon",),
         go=["spent some time in the garden", "went out into the garden",
             "worked in the garden"],
         acts=["watered the tomatoes", "pulled weeds from the flower bed",
               "planted a row of {seedveg} seeds", "picked ripe {fruit} from the old tree",
               "sat in the sun with {drink}", "swept the path", "fed the birds",
               "dug a new bed for vegetables", "cut the grass"],
         obs=["The soil was soft after the rain.", "Bees were busy among the flowers.",
              "A robin watched from the fence.", "The roses had just started to bloom."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to see the doctor", "had an appointment at the health centre",
             "went to the clinic"],
         acts=["waited for {poss} name to be called", "had a check-up with the doctor",
               "asked the nurse about {poss} cough", "had {poss} blood pressure checked",
               "collected a prescription from the pharmacy",
               "asked the doctor some questions {p} had written down"],
         obs=["The waiting room was quiet.", "The doctor listened carefully and explained everything clearly.",
              "The nurse was kind and patient.", "A poster on the wall explained how to wash your hands."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the beach", "went to the coast with {poss} {relative2}", "took the train to the seaside"],
         acts=["walked along the sand", "collected smooth stones", "paddled in the cold water",
               "ate chips on the harbour wall", "watched the boats come in",
               "built a sandcastle with {friend}", "looked for crabs in the rock pools"],
         obs=["The sea was grey and wild.", "Seagulls cried over the waves.",
              "The sand was warm and soft.", "The wind smelled of salt."]),
    dict(who="any", times=("morning", "afternoon", "evening"),
         go=["went to the sports centre", "went to the gym", "went to {poss} exercise class"],
         acts=["joined a yoga class", "played badminton with {friend}",
               "ran on the track for half an hour", "did some stretching exercises",
               "lifted some light weights", "played table tennis with {friend}"],
         obs=["The sports hall was busy.", "The changing rooms were crowded.",
              "The coach gave everyone a few useful tips."]),
    dict(who="any", times=("morning", "afternoon", "evening"),
         go=["went to the swimming pool", "went for a swim", "cycled to the pool"],
         acts=["swam twenty lengths", "had a swimming lesson", "practised diving in the deep end",
               "swam slowly on {poss} back", "sat in the warm water and relaxed"],
         obs=["The pool was quiet that day.", "The water was cooler than usual.",
              "A lifeguard watched from a tall chair."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to a small cafe", "met {friend} at a cafe", "stopped at the corner cafe"],
         acts=["drank {drink}", "shared a slice of cake with {friend}",
               "read the newspaper by the window", "wrote a letter to {poss} {relative}",
               "talked with {friend} about {topic}", "had a bowl of soup and some bread"],
         obs=["The cafe was warm and cosy.", "The waiter remembered {poss} usual order.",
              "Soft music played in the background.", "The windows were steamed up."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the shops", "popped into the corner shop", "walked to the bakery"],
         acts=["bought a loaf of bread", "picked up some milk and eggs",
               "chatted with the shop owner", "bought a birthday card for {poss} {relative}",
               "bought some {fruit} and a bag of rice", "found everything on {poss} shopping list"],
         obs=["The shop was small but had everything.", "There was a long queue at the till.",
              "The baker had just taken fresh rolls out of the oven."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["visited {poss} grandparents", "went to see {poss} grandmother",
             "took the bus to {poss} grandparents' house"],
         acts=["helped {poss} grandmother in the garden", "listened to {poss} grandfather's old stories",
               "played cards after lunch", "looked at old family photos",
               "helped to bake a cake", "fixed a loose shelf in the kitchen"],
         obs=["The house smelled of soup and old books.", "The clock in the hall ticked loudly.",
              "Grandmother was very pleased to see {obj}."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["volunteered at the community centre", "helped at the food bank",
             "volunteered at the church hall"],
         acts=["sorted boxes of donated food", "served tea to the visitors",
               "painted a fence with other volunteers", "sorted donated clothes into sizes",
               "helped an older man fill in a form", "washed up after the lunch club"],
         obs=["Everyone worked together and chatted.", "The volunteers laughed a lot.",
              "The hall was full of people helping."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["visited the museum", "went to the town museum", "took a trip to the science museum"],
         acts=["looked at old coins and maps", "saw the skeleton of a whale",
               "learned about life in the town long ago", "watched a short film about {topic}",
               "tried an experiment with light and mirrors"],
         obs=["The museum was full of school groups.", "The rooms were cool and quiet.",
              "A guide told stories about each object."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went for a walk in the woods", "walked up the hill behind the village",
             "followed the path along the river"],
         acts=["spotted a deer between the trees", "stopped by a stream for a rest",
               "picked blackberries from the hedge", "listened to a woodpecker",
               "took photos of the view", "walked with {friend} for two hours"],
         obs=["The path was muddy in places.", "From the top, {p} could see the whole valley.",
              "The woods were quiet except for birdsong.", "The river was high after the rain."]),
    dict(who="adult", times=("morning", "afternoon", "evening"),
         go=["went to vote at the polling station", "walked to the polling station in the school hall"],
         acts=["gave {poss} name to the staff at the desk", "read the list of candidates carefully",
               "marked {poss} ballot paper in the booth", "put {poss} folded ballot in the sealed box"],
         obs=["The polling station was calm and quiet.", "The staff were helpful and polite.",
              "A sign explained how to fill in the ballot paper."]),
    dict(who="any", times=("morning", "afternoon"),
         go=["went to the post office", "queued at the post office"],
         acts=["posted a parcel to {poss} {relative}", "bought a book of stamps",
               "sent a birthday card to {friend}"],
         obs=["The queue moved slowly.", "The clerk was friendly and quick."]),
    dict(who="any", times=("afternoon", "evening"),
         go=["went to {poss} music lesson", "went to the music school"],
         acts=["practised scales for twenty minutes", "learned a new song on the guitar",
               "played a duet with {friend}", "practised a hard piece on the piano",
               "played the drums for the first time"],
         obs=["The music room was warm.", "The teacher clapped at the end.",
              "The piece was hard at first but got easier."]),
    dict(who="any", times=("afternoon", "evening"),
         go=["went to choir practice", "went to sing with the choir"],
         acts=["sang with the choir for two hours", "learned the words of a new song",
               "practised a song for the spring concert", "sang a short part on {poss} own"],
         obs=["The hall was full of voices.", "The conductor smiled at the end.",
              "The new song was hard at first but got easier."]),
    dict(who="any", times=("evening",),
         go=["came home", "got home", "arrived home"],
         acts=["cooked {dish} for dinner", "washed the dishes", "called {poss} {relative}",
               "read a chapter of {poss} book", "watched a film with {poss} family",
               "played a board game with {poss} {relative}", "took a warm bath",
               "listened to music", "wrote a letter to {poss} {relative}",
               "tidied {poss} room", "ate dinner with {poss} family",
               "helped to cook {dish}"],
         obs=["The house was warm and bright.", "Dinner smelled wonderful.",
              "Outside, it was already dark.", "The rain had stopped at last."]),
    dict(who="child", times=("evening",),
         go=["came home from school", "got home from school"],
         acts=["did {poss} homework at the kitchen table", "played with {poss} little brother",
               "practised reading with {poss} mother", "helped to lay the table for dinner",
               "drew a picture for {poss} grandmother"],
         obs=["The house was full of noise.", "Dinner was almost ready."]),
]

TIME_OPENERS = {
    "morning": ["In the morning,", "Early in the morning,", "After breakfast,", "First,",
                "Before lunch,", "That morning,"],
    "afternoon": ["In the afternoon,", "After lunch,", "Later that day,", "Later,",
                  "After that,", "In the early afternoon,"],
    "evening": ["In the evening,", "That evening,", "After dinner,", "When it got dark,",
                "At the end of the day,"],
}

STORY_OPENINGS = [
    "{name} woke up early on {day}.",
    "It was a {weather} {day}, and {name} had a lot to do.",
    "On {day}, {name} got up at {clock}.",
    "It was a {weather} morning in early {season}.",
    "{day} was a {weather} day.",
    "{name} had been looking forward to {day} all week.",
    "The alarm rang at {clock}, and {name} got out of bed.",
]

PROBLEMS = [
    ("It started to rain, and {p} had forgotten {poss} umbrella.",
     "Luckily, a woman at the bus stop shared hers with {obj}."),
    ("{P} missed the bus by a few seconds.",
     "So {p} decided to walk instead and enjoyed the fresh air."),
    ("{P} could not find {poss} keys anywhere.",
     "After ten minutes, {p} found them in {poss} coat pocket."),
    ("On the way, {p} tripped and dropped {poss} bag, and some {fruit} rolled across the pavement.",
     "A kind stranger stopped and helped {obj} pick them up."),
    ("{P} realised that {p} had left {poss} {item} at home.",
     "It was annoying, but {p} managed without it."),
    ("On the way, {p} met an old man who was lost.",
     "{P} showed him the way to the station."),
    ("A little girl in the street had lost her ball under a car.",
     "{P} helped her get it back, and she smiled."),
    ("{P} felt a little nervous about the day ahead.",
     "{P} took a deep breath, and everything went well in the end."),
    ("The road was closed because of repairs.",
     "{P} took a longer way round and saw a part of town {p} did not know."),
]

STORY_CLOSINGS = [
    "That night, {name} went to bed tired but happy.",
    "By the evening, {p} felt tired but content.",
    "It had been a busy day, but a good one.",
    "Before bed, {p} wrote a few lines in {poss} diary.",
    "{name} fell asleep quickly that night.",
    "{P} was already looking forward to the next day.",
    "{name} smiled. It had been a good {day}.",
    "Later, {p} went to bed early with a book.",
    "It was a simple day, but {name} enjoyed every part of it.",
]

HOBBIES = ["learning to paint", "going to a dance class", "growing tomatoes",
           "knitting a blanket", "running every morning", "learning Spanish",
           "keeping bees", "playing chess at the club", "baking bread every week",
           "taking photos of birds", "singing in a choir", "making pots out of clay",
           "swimming twice a week", "writing short stories", "repairing old bicycles"]


class Teller:
    """Keeps track of who a story is about and fills templates."""

    def __init__(self, rng, first_person=False):
        self.rng = rng
        self.first = first_person
        name, g = person(rng)
        friend, fg = person(rng, exclude=(name,))
        self.ctx = {"name": name, "friend": friend, "fposs": PRONOUNS[fg]["poss"],
                    "day": rng.choice(DAYS), "weather": rng.choice(WEATHER_ADJ)}
        self.ctx.update(PRONOUNS["i" if first_person else g])
        self.mentioned = first_person
        self.problem_done = False
        self.last_pre = None

    def fill(self, template, **extra):
        d = slot_fillers(self.rng)
        d.update(self.ctx)
        d.update(extra)
        out = template.format(**d)
        if "{name}" in template:
            self.mentioned = True
        return out

    def subj(self):
        if self.first:
            return "I"
        if not self.mentioned or self.rng.random() < 0.15:
            self.mentioned = True
            return self.ctx["name"]
        return self.ctx["p"]


def scene_sentences(t, scene, opener, use_go=True, allow_problem=False):
    rng = t.rng
    out = []
    home = scene is SCENES[0] or scene["times"] == ("evening",)
    if use_go:
        s = t.subj()
        go = t.fill(rng.choice(scene["go"]))
        out.append(cap((opener + " " if opener else "") + s + " " + go + "."))
    if rng.random() < 0.4:
        out.append(t.fill(rng.choice(scene["obs"])))
    acts = sample_in_order(rng, scene["acts"], min(len(scene["acts"]), rng.choice([1, 2, 2, 3])))
    for i, act in enumerate(acts):
        act = t.fill(act)
        if i == 0 and not use_go and opener:
            out.append(cap(opener + " " + t.subj() + " " + act + "."))
            continue
        r = rng.random()
        if i == 0:
            if r < 0.3 and not home:
                out.append("There, " + t.subj() + " " + act + ".")
            elif r < 0.5 and len(acts) > 1:
                act2 = t.fill(acts[1])
                out.append(cap(t.subj() + " " + act + " and " + act2 + "."))
                break
            else:
                out.append(cap(t.subj() + " " + act + "."))
        else:
            pre = rng.choice([x for x in ["Then ", "After a while, ", "", "Later, ", "", "Next, "]
                              if x == "" or x != t.last_pre])
            t.last_pre = pre
            if pre == "" and rng.random() < 0.5:
                out.append(cap(t.subj() + " also " + act + "."))
            else:
                out.append(cap(pre + t.subj() + " " + act + "."))
    if rng.random() < 0.25:
        out.append(t.fill(rng.choice(scene["obs"])))
    if allow_problem and use_go and t.mentioned and not t.problem_done and rng.random() < 0.35:
        t.problem_done = True
        prob, fix = rng.choice(PROBLEMS)
        if "{item}" in prob:
            out.insert(1, t.fill(prob))
            out.insert(2, t.fill(fix))
        else:
            # The problem happens on the way there, so it comes first.
            go = t.fill(rng.choice(scene["go"]))
            lead = rng.choice(["Then", "After that,", "Soon", "A little later,"])
            out[0] = lead + " " + t.subj() + " " + go + "."
            out[:0] = [t.fill(prob), t.fill(fix)]
    # avoid the same observation twice in a row
    dedup = []
    for s in out:
        if s not in dedup:
            dedup.append(s)
    return dedup


WORKDAY_ONLY = ("went to school", "went to work", "came home from school")


def day_plan(rng, who, day=None):
    """Pick a sequence of scenes through one day."""
    eligible = [s for s in SCENES[1:] if s["who"] in ("any", who)]
    if day in ("Saturday", "Sunday"):
        eligible = [s for s in eligible if s["go"][0] not in WORKDAY_ONLY]
    morning = [s for s in eligible if "morning" in s["times"]]
    afternoon = [s for s in eligible if "afternoon" in s["times"]]
    evening = [s for s in eligible if "evening" in s["times"]]
    plan = []
    if rng.random() < 0.5:
        plan.append((SCENES[0], "morning"))
    first = rng.choice(morning)
    plan.append((first, "morning"))
    if rng.random() < 0.75:
        second = rng.choice([s for s in afternoon if s is not first])
        plan.append((second, "afternoon"))
    if rng.random() < 0.7:
        ev = rng.choice([s for s in evening if all(s is not p[0] for p in plan)])
        plan.append((ev, "evening"))
    return plan


def gen_story(rng):
    t = Teller(rng)
    who = rng.choice(["child", "adult", "adult", "any"])
    opening_i = rng.randrange(len(STORY_OPENINGS))
    sents = [t.fill(STORY_OPENINGS[opening_i])]
    woke = opening_i in (0, 2, 6)
    plan = day_plan(rng, who if who != "any" else "adult", t.ctx["day"])
    for scene, time in plan:
        if scene is SCENES[0]:
            sents += scene_sentences(t, scene, None, use_go=not woke)
            continue
        opener = rng.choice(TIME_OPENERS[time])
        sents += scene_sentences(t, scene, opener, allow_problem=(time != "evening"))
    sents.append(t.fill(rng.choice(STORY_CLOSINGS)))
    return " ".join(sents)


DIARY_HEADERS = ["Diary, {day}.", "{day}, {date} {month}.", "Dear diary,", "{day} evening."]
DIARY_FEELINGS = ["Now I feel {feeling}.", "Tonight I feel {feeling}.",
                  "All in all, I feel {feeling} today.", "I am tired, but I feel {feeling}."]
DIARY_PLANS = ["Tomorrow I want to {plan}.", "Tomorrow I hope to {plan}.",
               "This weekend I might {plan}.", "Next week I really must {plan}.",
               "If the weather is good tomorrow, I will {plan}."]


def gen_diary(rng):
    t = Teller(rng, first_person=True)
    who = rng.choice(["child", "adult", "adult"])
    head = t.fill(rng.choice(DIARY_HEADERS), date=str(rng.randint(1, 28)))
    sents = []
    if rng.random() < 0.5:
        sents.append(t.fill(rng.choice(["It was a {weather} morning.", "The morning was {weather}.",
                                        "What a {weather} morning it was.", "Another {weather} morning."])))
    plan = [p for p in day_plan(rng, who, t.ctx["day"]) if p[0] is not SCENES[0]]
    for k, (scene, time) in enumerate(plan):
        opener = rng.choice(TIME_OPENERS[time] + (["Today"] * 3 if k == 0 else []))
        sents += scene_sentences(t, scene, opener, allow_problem=(time != "evening"))
    sents.append(t.fill(rng.choice(DIARY_FEELINGS)))
    sents.append(t.fill(rng.choice(DIARY_PLANS)))
    return head + " " + " ".join(sents) if head.endswith(".") else head + "\n" + " ".join(sents)


LETTER_OPENINGS = ["I hope you are well.", "Thank you for your last letter.",
                   "It was lovely to hear from you.", "I am sorry it has taken me so long to write.",
                   "How are you? I hope the {weather} weather is not too bad where you are.",
                   "I have been meaning to write to you for weeks."]
LETTER_NEWS = ["My {relative} says hello.", "My {relative} has started {hobby}.",
               "I have started {hobby}, and I am enjoying it a lot.",
               "Everyone here is well.", "My {relative} sends you lots of love."]
LETTER_PLANS = ["Next month I am going to {plan}.", "In the {season} I would like to {plan}.",
                "Soon I hope to {plan}."]
LETTER_CLOSES = ["Write back soon and tell me all your news.", "Let me know when you can visit.",
                 "I hope to see you soon.", "Give my love to everyone at home.",
                 "Please write when you have time."]
SIGNOFFS = ["Love,", "Best wishes,", "With love from,", "Take care,", "All the best,",
            "Warm wishes,", "Your friend,"]


def gen_letter(rng):
    t = Teller(rng, first_person=True)
    to, _ = person(rng)
    sender, _ = person(rng, exclude=(to,))
    sents = [t.fill(rng.choice(LETTER_OPENINGS))]
    day = t.ctx["day"]
    plan = [p for p in day_plan(rng, "adult", day) if p[0] is not SCENES[0]]
    for k, (scene, time) in enumerate(plan):
        opener = ("Last " + day + ",") if k == 0 else rng.choice(TIME_OPENERS[time])
        sents += scene_sentences(t, scene, opener, allow_problem=(k > 0 and time != "evening"))
    sents.append(t.fill(rng.choice(LETTER_NEWS), hobby=rng.choice(HOBBIES)))
    if rng.random() < 0.7:
        sents.append(t.fill(rng.choice(LETTER_PLANS)))
    sents.append(rng.choice(LETTER_CLOSES))
    return "Dear " + to + ",\n" + " ".join(sents) + "\n" + rng.choice(SIGNOFFS) + "\n" + sender


# ---------------------------------------------------------------------------
# Animals (present tense, encyclopedic)
# Fields: singular, plural, kind, home, food, feature (plural verb phrase),
# habit (plural verb phrase), name of the young (or None)
# ---------------------------------------------------------------------------

ANIMALS = [
    ("fox", "foxes", "small wild mammal", "in forests, fields and even city gardens",
     "mice, insects, worms and berries", "have a bushy tail and very good hearing",
     "hunt mostly at dusk and at night", "cubs"),
    ("rabbit", "rabbits", "small mammal", "in burrows under fields and meadows",
     "grass, leaves and other plants", "have long ears and strong back legs",
     "live together in large groups", "kits"),
    ("hedgehog", "hedgehogs", "small mammal", "in hedges, woods and gardens",
     "beetles, worms, slugs and other small creatures", "are covered in sharp spines",
     "roll into a tight ball when they feel afraid", "hoglets"),
    ("owl", "owls", "bird of prey", "in woods, barns and old trees",
     "mice, voles and large insects", "have huge eyes and soft feathers that make no sound",
     "hunt at night and sleep during the day", "owlets"),
    ("robin", "robins", "small songbird", "in gardens, parks and woods",
     "worms, insects, seeds and fruit", "have a bright orange-red chest",
     "sing all through the year, even in winter", "chicks"),
    ("deer", "deer", "large wild mammal", "in forests and on open hills",
     "grass, leaves, buds and bark", "have long thin legs and can run very fast",
     "grow new antlers every year if they are males", "fawns"),
    ("badger", "badgers", "wild mammal", "in underground tunnels called setts",
     "earthworms, roots, fruit and insects", "have a black and white striped face",
     "come out of their setts after dark", "cubs"),
    ("squirrel", "squirrels", "small mammal", "in trees in woods and parks",
     "nuts, seeds, buds and fungi", "have a long fluffy tail that helps them balance",
     "bury nuts in autumn to eat later", "kits"),
    ("frog", "frogs", "small amphibian", "in and near ponds, streams and damp grass",
     "insects, slugs and worms", "have smooth damp skin and long back legs",
     "catch insects with their long sticky tongues", "tadpoles"),
    ("salmon", "salmon", "large fish", "in rivers and in the sea",
     "insects, shrimps and smaller fish", "have silver sides and strong tails",
     "swim back up the river where they were born to lay eggs", "fry"),
    ("whale", "whales", "huge sea mammal", "in oceans all over the world",
     "tiny shrimp-like animals, fish and squid", "breathe air through a blowhole on top of their heads",
     "travel very long distances every year", "calves"),
    ("dolphin", "dolphins", "clever sea mammal", "in warm seas and oceans",
     "fish and squid", "have smooth grey skin and a curved fin on their backs",
     "live in groups and talk to each other with clicks and whistles", "calves"),
    ("elephant", "elephants", "very large mammal", "in grasslands and forests in Africa and Asia",
     "grass, leaves, bark and fruit", "have a long trunk and large ears",
     "live in family groups led by an older female", "calves"),
    ("lion", "lions", "large wild cat", "on the grassy plains of Africa",
     "zebra, antelope and other large animals", "have golden fur, and the males have a thick mane",
     "live in groups called prides", "cubs"),
    ("giraffe", "giraffes", "very tall mammal", "on the open plains of Africa",
     "leaves from the tops of trees", "have very long necks and long dark tongues",
     "sleep for only a short time each day", "calves"),
    ("zebra", "zebras", "wild mammal related to the horse", "on the grasslands of Africa",
     "grass", "have black and white stripes, and no two zebras have the same pattern",
     "live in herds and watch out for each other", "foals"),
    ("camel", "camels", "large mammal", "in hot, dry deserts",
     "dry grass, leaves and thorny plants", "have one or two humps that store fat",
     "can go for many days without drinking water", "calves"),
    ("penguin", "penguins", "bird that cannot fly", "in cold southern seas and on icy shores",
     "fish, squid and krill", "have black backs and white fronts",
     "use their wings as flippers to swim fast under water", "chicks"),
    ("polar bear", "polar bears", "large white bear", "on the sea ice of the far north",
     "seals and fish", "have thick white fur and a layer of fat under their skin",
     "swim long distances between pieces of ice", "cubs"),
    ("kangaroo", "kangaroos", "mammal with a pouch", "in the grasslands and bush of Australia",
     "grass and leaves", "have powerful back legs and a long strong tail",
     "move by hopping and can jump a long way", "joeys"),
    ("koala", "koalas", "tree-living mammal with a pouch", "in eucalyptus forests in Australia",
     "eucalyptus leaves", "have thick grey fur and large round ears",
     "sleep for most of the day", "joeys"),
    ("bat", "bats", "flying mammal", "in caves, old buildings and hollow trees",
     "insects, fruit or nectar, depending on the kind", "have wings made of thin skin stretched between long fingers",
     "find their way in the dark by listening to echoes", "pups"),
    ("beaver", "beavers", "large rodent", "in rivers, streams and lakes",
     "bark, twigs and water plants", "have a flat tail and strong orange front teeth",
     "build dams out of branches and mud", "kits"),
    ("otter", "otters", "playful mammal", "along rivers, lakes and coasts",
     "fish, crabs and frogs", "have thick waterproof fur and webbed feet",
     "often play by sliding down muddy banks", "pups"),
    ("eagle", "eagles", "large bird of prey", "in mountains, forests and along coasts",
     "fish, rabbits and other small animals", "have hooked beaks, sharp claws and very keen eyesight",
     "build huge nests high up in trees or on cliffs", "eaglets"),
    ("crow", "crows", "black bird", "in fields, towns and woods",
     "seeds, insects, scraps and almost anything they can find", "are very clever and can solve simple puzzles",
     "remember the faces of people they have met", "chicks"),
    ("swan", "swans", "large water bird", "on lakes, rivers and quiet ponds",
     "water plants, grass and small creatures", "have long graceful necks",
     "often stay with the same partner for many years", "cygnets"),
    ("duck", "ducks", "water bird", "on ponds, lakes and rivers",
     "water plants, seeds, insects and snails", "have waterproof feathers and webbed feet",
     "dip their heads under the water to feed", "ducklings"),
    ("horse", "horses", "large mammal", "on farms and in open grasslands",
     "grass and hay", "have long legs, a flowing mane and hard hooves",
     "can sleep standing up", "foals"),
    ("cow", "cows", "farm animal", "on farms and in green fields",
     "grass and hay", "have four stomach sections to help digest tough grass",
     "spend many hours each day chewing", "calves"),
    ("sheep", "sheep", "farm animal", "on farms, hills and open fields",
     "grass", "have thick woolly coats that farmers shear in summer",
     "like to stay close together in a flock", "lambs"),
    ("goat", "goats", "farm animal", "on farms and rocky hillsides",
     "grass, leaves and shrubs", "are very good at climbing steep rocks",
     "are curious and like to explore", "kids"),
    ("pig", "pigs", "farm animal", "on farms",
     "grains, vegetables and almost any kind of food", "have a strong flat snout for digging",
     "roll in mud to keep cool on hot days", "piglets"),
    ("hen", "hens", "farm bird", "on farms and in back gardens",
     "grain, seeds, worms and insects", "lay eggs, often one a day in summer",
     "scratch at the ground to find food", "chicks"),
    ("bee", "bees", "flying insect", "in hives, holes in the ground and hollow stems",
     "nectar and pollen from flowers", "have four wings and a fuzzy body",
     "help plants make fruit by carrying pollen from flower to flower", None),
    ("ant", "ants", "small insect", "in nests under the ground or inside wood",
     "seeds, sweet liquids and other insects", "are very strong for their size",
     "live in huge groups where each ant has a job", None),
    ("butterfly", "butterflies", "flying insect", "in gardens, meadows and forests",
     "nectar from flowers", "have large, brightly coloured wings",
     "start life as caterpillars that later change inside a case", None),
    ("spider", "spiders", "small creature with eight legs", "almost everywhere, including houses and gardens",
     "flies and other small insects", "are not insects, because they have eight legs instead of six",
     "spin webs of fine silk to catch food", "spiderlings"),
    ("snail", "snails", "small soft-bodied creature", "in gardens, woods and damp places",
     "leaves and rotting plants", "carry a hard shell on their backs",
     "come out after rain and move very slowly", None),
    ("turtle", "turtles", "reptile with a shell", "in warm seas, rivers and ponds",
     "sea grass, jellyfish and small animals", "have a hard shell that protects their bodies",
     "return to sandy beaches to lay their eggs", "hatchlings"),
    ("crocodile", "crocodiles", "large reptile", "in rivers and swamps in hot countries",
     "fish, birds and other animals", "have tough scaly skin and powerful jaws",
     "lie very still in the water and wait for food", "hatchlings"),
    ("lizard", "lizards", "small reptile", "in warm, dry and sunny places",
     "insects and other small creatures", "have scaly skin and long tails",
     "lie in the sun to warm up in the morning", "hatchlings"),
    ("shark", "sharks", "large fish", "in oceans all over the world",
     "fish, seals and other sea animals", "have rows of sharp teeth that are replaced when they fall out",
     "have lived in the oceans for millions of years", "pups"),
    ("octopus", "octopuses", "soft-bodied sea creature", "on the sea floor among rocks",
     "crabs, shellfish and small fish", "have eight arms covered in suckers",
     "can change colour to hide from danger", None),
    ("crab", "crabs", "sea creature with a hard shell", "on beaches, in rock pools and in the sea",
     "small animals, plants and scraps", "have ten legs, including two strong claws",
     "walk sideways", None),
    ("seal", "seals", "sea mammal", "in cold seas and on rocky shores",
     "fish and squid", "have smooth bodies and flippers",
     "come out of the water to rest on rocks and beaches", "pups"),
    ("wolf", "wolves", "wild mammal related to the dog", "in forests, mountains and cold plains",
     "deer and other animals", "have thick fur and a strong sense of smell",
     "live and hunt in family groups called packs", "pups"),
    ("tiger", "tigers", "large wild cat", "in forests and grasslands in Asia",
     "deer, wild pigs and other animals", "have orange fur with black stripes",
     "usually live and hunt alone", "cubs"),
    ("panda", "pandas", "black and white bear", "in mountain forests in China",
     "bamboo", "have strong jaws for chewing tough bamboo stems",
     "spend most of the day eating", "cubs"),
    ("parrot", "parrots", "colourful bird", "in warm forests",
     "fruit, nuts and seeds", "have curved beaks and bright feathers",
     "can copy sounds, including human words", "chicks"),
    ("gorilla", "gorillas", "large ape", "in the forests of central Africa",
     "leaves, stems and fruit", "have strong arms and dark hair",
     "live in family groups led by a large male", "infants"),
    ("mole", "moles", "small mammal", "in tunnels under fields and lawns",
     "earthworms and insects", "have large front paws for digging and tiny eyes",
     "push up small piles of earth called molehills", "pups"),
]

ANIMAL_SENTENCES = [
    "The {s} is {kind_a}. It lives {home}.",
    "{Pl} live {home}.",
    "{Pl} eat {food}.",
    "{S_a} feeds mainly on {food}.",
    "{Pl} {feature}.",
    "Many {pl} {habit}.",
    "{Pl} {habit}.",
    "People who study {pl} have found that they {habit}.",
    "It is well known that {pl} {feature}.",
]

ANIMAL_LINKS = [
    "{Pl} need a safe place to live, and many people work to protect the places where they are found.",
    "You can learn more about {pl} in books from the library or at a nature centre.",
    "If you see {s_a} in the wild, it is best to watch quietly from a distance.",
    "Scientists still have a lot to learn about {pl}.",
    "Like all animals, {pl} play a part in the balance of nature.",
    "Children often enjoy drawing {pl}.",
]


def animal_slots(an):
    s, pl, kind, home, food, feature, habit, young = an
    return {"s": s, "s_a": a(s), "S_a": cap(a(s)), "pl": pl, "Pl": cap(pl), "kind_a": a(kind), "home": home,
            "food": food, "feature": feature, "habit": habit, "young": young}


def gen_animal(rng):
    an = rng.choice(ANIMALS)
    d = animal_slots(an)
    first = rng.choice(ANIMAL_SENTENCES[:2])
    rest = [x for x in ANIMAL_SENTENCES[2:]]
    # one food sentence, one feature sentence, one habit sentence
    food = rng.choice(rest[0:2])
    feature = rng.choice([rest[2], rest[6]])
    habit = rng.choice(rest[3:6])
    body = [food, feature, habit]
    rng.shuffle(body)
    sents = [first] + body
    if d["young"] and rng.random() < 0.6:
        sents.append(rng.choice(["Baby {pl} are called {young}.",
                                 "The young of the {s} are called {young}."]))
    if rng.random() < 0.6:
        sents.append(rng.choice(ANIMAL_LINKS))
    text = " ".join(x.format(**d) for x in sents)
    if rng.random() < 0.3:
        # a second, related animal for comparison
        an2 = rng.choice([x for x in ANIMALS if x is not an])
        d2 = animal_slots(an2)
        text += " " + rng.choice([
            "{Pl} are quite different. They live {home} and eat {food}.",
            "By contrast, {pl} live {home}, and they {habit}.",
            "Another animal worth knowing about is the {s}. {Pl} {feature}.",
        ]).format(**d2)
    return text


def gen_animal_qa(rng):
    an = rng.choice(ANIMALS)
    d = animal_slots(an)
    pairs = [
        ("Q: Where do {pl} live?", "A: {Pl} live {home}. {Pl} {feature}."),
        ("Q: What do {pl} eat?", "A: {Pl} eat {food}. Many {pl} {habit}."),
        ("Q: What kind of animal is {s_a}?", "A: The {s} is {kind_a}. It lives {home}, and it feeds on {food}."),
        ("Q: Tell me something interesting about {pl}.", "A: {Pl} {habit}. They also {feature}."),
    ]
    if d["young"]:
        pairs.append(("Q: What are baby {pl} called?", "A: Baby {pl} are called {young}. Adult {pl} {habit}."))
    chosen = rng.sample(pairs, rng.choice([1, 2, 2, 3]))
    return "\n".join((q + "\n" + ans).format(**d) for q, ans in chosen)


# ---------------------------------------------------------------------------
# Jobs. Duties are base-form verb phrases; third() makes the singular form.
# Fields: job, plural, workplace, duties, what the job needs, training
# ---------------------------------------------------------------------------

JOBS = [
    ("nurse", "nurses", "in hospitals, clinics, schools and people's homes",
     ["check on patients", "give medicines", "dress wounds",
      "explain treatments to patients and families", "notice when a patient is getting worse"],
     "patience, kindness and a calm head", "study nursing for several years"),
    ("doctor", "doctors", "in hospitals and local health centres",
     ["listen to patients describe their symptoms", "examine patients", "arrange tests",
      "explain what might be wrong", "suggest the best treatment"],
     "good judgement and the ability to listen", "train at medical school for many years"),
    ("teacher", "teachers", "in schools and colleges",
     ["plan lessons", "explain new ideas", "mark homework", "help pupils who are struggling",
      "talk with parents about progress"],
     "patience, clear speaking and a love of learning", "study for a degree and a teaching qualification"),
    ("farmer", "farmers", "on farms in the countryside",
     ["plant crops", "look after animals", "repair fences and machines",
      "watch the weather closely", "sell produce at markets"],
     "hard work and a good understanding of nature", "learn by working on a farm, and some also go to college"),
    ("baker", "bakers", "in bakeries and shops",
     ["mix dough", "bake bread and cakes", "start work very early in the morning",
      "clean the ovens and trays", "try out new recipes"],
     "an early start and careful measuring", "learn from an experienced baker"),
    ("firefighter", "firefighters", "at fire stations",
     ["put out fires", "rescue people after accidents", "check their equipment every day",
      "teach people about fire safety", "help during floods and storms"],
     "courage, fitness and good teamwork", "complete months of careful training"),
    ("police officer", "police officers", "in police stations and on the streets",
     ["answer emergency calls", "investigate crimes", "help people who are lost or in danger",
      "direct traffic after accidents", "give advice on keeping homes safe"],
     "fairness, calm and respect for the law", "complete a training course and then learn on the job"),
    ("librarian", "librarians", "in public, school and university libraries",
     ["help people find information", "order new books", "run reading groups for children",
      "show people how to use computers", "keep the shelves in good order"],
     "curiosity and a wish to help people", "study information science"),
    ("pharmacist", "pharmacists", "in pharmacies and hospitals",
     ["prepare medicines", "check prescriptions", "explain how to take medicines safely",
      "give advice about minor illnesses", "warn when two medicines should not be mixed"],
     "great care and attention to detail", "study pharmacy at university"),
    ("dentist", "dentists", "in dental surgeries",
     ["check teeth and gums", "fill holes in teeth", "clean teeth",
      "explain how to brush properly", "take X-rays of the mouth"],
     "steady hands and a gentle manner", "study dentistry for several years"),
    ("vet", "vets", "in animal clinics and on farms",
     ["examine sick animals", "give vaccines to pets", "perform operations",
      "advise owners on feeding and care", "visit farms to check on herds"],
     "a love of animals and a calm manner", "study veterinary science for several years"),
    ("bus driver", "bus drivers", "on city and country bus routes",
     ["drive buses safely", "help passengers with questions", "keep to a timetable",
      "check the bus before each journey", "lower the step for people with prams and wheelchairs"],
     "patience and good concentration", "pass a special driving test"),
    ("pilot", "pilots", "in the cockpits of aeroplanes",
     ["fly passengers and cargo", "check the weather before each flight", "talk to air traffic control",
      "inspect the plane before take-off", "follow careful safety checklists"],
     "calm nerves and good teamwork", "train for hundreds of hours in the air and in simulators"),
    ("chef", "chefs", "in restaurant and hotel kitchens",
     ["plan menus", "cook meals", "keep the kitchen clean and safe",
      "order fresh ingredients", "train younger cooks"],
     "energy, good taste and the ability to work fast", "learn at cookery school or in a busy kitchen"),
    ("plumber", "plumbers", "in homes, offices and new buildings",
     ["fix leaking pipes", "fit sinks, baths and showers", "repair boilers",
      "unblock drains", "explain to customers what went wrong"],
     "practical skill and the ability to solve problems", "train as apprentices"),
    ("electrician", "electricians", "in homes, factories and offices",
     ["fit new wiring", "repair faulty sockets and lights", "test that electrical systems are safe",
      "read building plans", "install solar panels"],
     "care, precision and a strong sense of safety", "train as apprentices for several years"),
    ("carpenter", "carpenters", "in workshops and on building sites",
     ["build doors, stairs and shelves", "cut wood to size", "repair old furniture",
      "fit kitchens", "sharpen their tools"],
     "good hands and careful measuring", "learn the trade as apprentices"),
    ("gardener", "gardeners", "in parks, gardens and large estates",
     ["plant flowers and trees", "cut grass and hedges", "remove weeds",
      "plan new flower beds", "look after tools and greenhouses"],
     "patience and a love of plants", "learn on the job or at a college course"),
    ("postal worker", "postal workers", "in sorting offices and on delivery rounds",
     ["sort letters and parcels", "deliver mail to homes and businesses", "collect post from post boxes",
      "walk many miles each day", "keep track of parcels that need a signature"],
     "fitness and reliability", "learn on the job"),
    ("builder", "builders", "on building sites",
     ["lay bricks", "mix concrete", "put up walls and roofs", "follow building plans",
      "work safely with heavy tools"],
     "strength and careful teamwork", "train as apprentices"),
    ("engineer", "engineers", "in offices, factories and on building sites",
     ["design bridges, machines and roads", "test new ideas", "solve technical problems",
      "check that structures are safe", "work with builders and planners"],
     "a good head for numbers and creative thinking", "study engineering at university"),
    ("scientist", "scientists", "in laboratories, universities and out in the field",
     ["ask questions about the world", "plan careful experiments", "collect data",
      "share their results with other scientists", "check the work of other scientists"],
     "curiosity and honesty", "study for many years"),
    ("judge", "judges", "in courts",
     ["run trials fairly", "decide which evidence can be heard", "explain the law to juries",
      "decide sentences", "write down the reasons for their decisions"],
     "fairness, independence and a deep knowledge of the law", "work as lawyers for many years first"),
    ("lawyer", "lawyers", "in law firms, courts and advice centres",
     ["give advice about the law", "prepare documents", "speak for clients in court",
      "help people understand their rights", "try to settle disputes without a trial"],
     "clear thinking and careful reading", "study law and then train in a firm"),
    ("journalist", "journalists", "for newspapers, radio, television and websites",
     ["find out what is happening", "interview people", "check facts with several sources",
      "write clear reports", "correct mistakes when they find them"],
     "curiosity, honesty and good writing", "study journalism or learn on the job"),
    ("shop assistant", "shop assistants", "in shops and supermarkets",
     ["help customers find what they need", "stack shelves", "work at the till",
      "answer questions about products", "keep the shop tidy"],
     "friendliness and patience", "learn on the job"),
    ("mechanic", "mechanics", "in garages and workshops",
     ["repair cars and vans", "check brakes and tyres", "find out why an engine will not start",
      "replace worn parts", "explain repairs to customers"],
     "practical skill and patience", "train as apprentices"),
    ("paramedic", "paramedics", "in ambulances and at the scene of emergencies",
     ["answer emergency calls", "give first aid and treatment on the spot", "drive ambulances",
      "take patients to hospital", "calm frightened people"],
     "quick thinking and a steady nerve", "complete a university course in paramedic science"),
    ("midwife", "midwives", "in hospitals, birth centres and people's homes",
     ["care for women during pregnancy", "help babies to be born", "check the health of new babies",
      "support new parents", "give advice on feeding"],
     "gentleness and calm in a crisis", "study midwifery for several years"),
    ("social worker", "social workers", "in councils, hospitals and charities",
     ["support families going through hard times", "protect children and adults at risk",
      "help people find services they need", "visit people at home", "write careful reports"],
     "empathy and good judgement", "study social work at university"),
    ("counsellor", "counsellors", "in clinics, schools, charities and private practice",
     ["listen to people talk about their problems", "help people understand their feelings",
      "keep conversations confidential", "suggest ways of coping with stress",
      "refer people to other services when needed"],
     "warmth, patience and careful listening", "complete a long training in counselling"),
    ("architect", "architects", "in design offices",
     ["design houses, schools and offices", "draw detailed plans", "visit building sites",
      "talk with clients about what they need", "think about light, space and safety"],
     "creativity and a good eye for detail", "study architecture for many years"),
    ("tailor", "tailors", "in small workshops",
     ["measure customers", "cut cloth", "sew suits and dresses",
      "alter clothes so they fit well", "repair torn clothes"],
     "nimble fingers and a good eye", "learn from an experienced tailor"),
    ("translator", "translators", "in offices, courts and at home",
     ["turn writing from one language into another", "check the meaning of difficult words",
      "help people understand official letters", "translate books and websites",
      "keep up with changes in both languages"],
     "excellent language skills and care", "study languages for many years"),
    ("park ranger", "park rangers", "in national parks and nature reserves",
     ["look after paths and signs", "count birds and animals", "teach visitors about nature",
      "help people who are lost or hurt", "watch for the risk of fire"],
     "a love of the outdoors and good knowledge of nature", "study environmental science or learn on the job"),
    ("lifeguard", "lifeguards", "at swimming pools and beaches",
     ["watch swimmers carefully", "rescue people in trouble in the water", "give first aid",
      "explain the safety rules", "put up warning flags"],
     "strong swimming and sharp eyes", "pass a lifesaving course"),
    ("care worker", "care workers", "in care homes and in people's own homes",
     ["help older and disabled people with daily tasks", "prepare meals",
      "help people wash and dress", "give company and conversation", "notice changes in health"],
     "kindness, patience and respect", "complete training on the job"),
    ("hairdresser", "hairdressers", "in salons",
     ["style hair", "talk with customers about what they want",
      "keep scissors and combs clean", "book appointments", "advise on hair care"],
     "a steady hand and good conversation", "train at college or as apprentices"),
    ("election official", "election officials", "at polling stations and counting centres",
     ["set up polling stations", "check voters' names on the register", "hand out ballot papers",
      "keep ballot boxes sealed and safe", "count votes carefully in front of observers"],
     "honesty and strict fairness to every party", "receive training before each election"),
    ("waiter", "waiters", "in cafes, restaurants and hotels",
     ["greet customers", "take orders", "carry food and drinks to tables",
      "answer questions about the menu", "clear tables"],
     "energy and a friendly manner", "learn on the job"),
    ("musician", "musicians", "in orchestras, bands, schools and recording studios",
     ["practise for many hours", "perform concerts", "write new music",
      "teach students", "play at weddings and festivals"],
     "dedication and a good ear", "practise for years, often from childhood"),
    ("cleaner", "cleaners", "in offices, hospitals, schools and homes",
     ["clean floors and windows", "empty bins", "keep kitchens and washrooms hygienic",
      "report broken equipment", "use cleaning products safely"],
     "care and reliability", "learn on the job"),
]

JOB_TEMPLATES_OPEN = [
    "{Job_a} works {place}.",
    "{Jobs} work {place}.",
    "Many {jobs} work {place}.",
    "{Job_a} is someone who works {place}.",
]
JOB_TEMPLATES_DUTY = [
    "{Jobs} {d1}, {d2} and {d3}.",
    "On a typical day, {job_a} might {d1}, {d2} and {d3}.",
    "{Job_a} {t1} and {t2}.",
    "Part of the job is to {d1}. Another part is to {d2}.",
    "{Job_a} has to {d1} and {d2}.",
    "{Jobs} also {d4}.",
]
JOB_TEMPLATES_NEED = [
    "To do this job well, you need {need}.",
    "The job needs {need}.",
    "People say that the job needs {need}.",
]
JOB_TEMPLATES_TRAIN = [
    "Most {jobs} {train}.",
    "To become {job_a}, people usually {train}.",
]
JOB_TEMPLATES_CLOSE = [
    "Without {jobs}, daily life would be much harder.",
    "It can be hard work, but many {jobs} say it is very rewarding.",
    "Our communities depend on the work of {jobs}.",
    "If you are interested in becoming {job_a}, it is a good idea to talk to someone who already does the job.",
]
JOB_STORY = [
    "{name} works as {job_a}. Every day, {p} {t1}. {P} also {t2}. {name} says the job needs {need}.",
    "{name} has been {job_a} for {num} years. {P} works {place}. On a busy day, {p} might {d1}, {d2} and {d3}. {P} says that no two days are the same.",
    "When {name} was young, {p} wanted to be {job_a}. Now {p} works {place}. Most days, {p} {t1} and {t2}. {Poss} favourite part of the job is when {p} can {d3}.",
]


def job_slots(rng, job):
    name, plural, place, duties, need, train = job
    d = rng.sample(duties, 4)
    return {"job": name, "job_a": a(name), "Job_a": cap(a(name)), "jobs": plural,
            "Jobs": cap(plural), "place": place, "need": need, "train": train,
            "d1": d[0], "d2": d[1], "d3": d[2], "d4": d[3], "t1": third(d[0]), "t2": third(d[1])}


def gen_job(rng):
    job = rng.choice(JOBS)
    d = job_slots(rng, job)
    if rng.random() < 0.3:
        name, g = person(rng)
        d.update(PRONOUNS[g])
        d["name"] = name
        d["num"] = rng.choice(["two", "three", "five", "ten", "twelve", "twenty"])
        text = rng.choice(JOB_STORY).format(**d)
        if rng.random() < 0.5:
            text += " " + rng.choice(JOB_TEMPLATES_CLOSE).format(**d)
        return text
    sents = [rng.choice(JOB_TEMPLATES_OPEN)]
    sents += rng.sample(JOB_TEMPLATES_DUTY[:5], 1)
    if rng.random() < 0.5:
        sents.append(JOB_TEMPLATES_DUTY[5])
    sents.append(rng.choice(JOB_TEMPLATES_NEED))
    if rng.random() < 0.7:
        sents.append(rng.choice(JOB_TEMPLATES_TRAIN))
    if rng.random() < 0.6:
        sents.append(rng.choice(JOB_TEMPLATES_CLOSE))
    return " ".join(s.format(**d) for s in sents)


def gen_job_qa(rng):
    job = rng.choice(JOBS)
    d = job_slots(rng, job)
    pairs = [
        ("Q: What does {job_a} do?", "A: {Job_a} {t1}, {t2} and {t3}. Most {jobs} work {place}."),
        ("Q: Where do {jobs} work?", "A: {Jobs} work {place}."),
        ("Q: How do you become {job_a}?", "A: Most people who want to become {job_a} {train}. The job needs {need}."),
        ("Q: What does it take to be a good {job}?", "A: The job needs {need}. {Jobs} {d1} and {d2}, so people rely on them."),
    ]
    d["t3"] = third(d["d3"])
    chosen = sample_in_order(rng, pairs, rng.choice([2, 2, 3]))
    return "\n".join((q + "\n" + ans).format(**d) for q, ans in chosen)


# ---------------------------------------------------------------------------
# How institutions work (present tense). Each entry: intro lines, facts in a
# sensible order, closing lines. A paragraph takes an ordered subset of facts.
# ---------------------------------------------------------------------------

INSTITUTIONS = [
    (["A court is where disputes are settled according to the law.",
      "Courts are an important part of any fair society.",
      "Here is a simple picture of how a court works."],
     ["A judge is in charge of the court and makes sure the rules are followed.",
      "In a criminal trial, the state must prove that the accused person is guilty.",
      "The accused person is treated as innocent until the case against them is proved.",
      "Both sides can call witnesses and ask them questions.",
      "Witnesses promise to tell the truth.",
      "In some trials, a jury of ordinary citizens decides the verdict.",
      "Everyone accused of a crime has the right to a lawyer.",
      "Most trials are held in public, so that justice can be seen to be done.",
      "If someone thinks a decision was wrong, they can often appeal to a higher court.",
      "Courts also settle disagreements about contracts, property and family matters."],
     ["The idea is that the law should treat everyone the same, rich or poor.",
      "Fair courts help people trust the law.",
      "Judges must be independent, so that no one can pressure them."]),
    (["Elections are how people in a democracy choose who governs them.",
      "Here is how a typical election works.",
      "An election is a chance for every adult citizen to have a say."],
     ["First, the date of the election is announced.",
      "People who want to vote must usually be registered.",
      "Candidates and parties explain their plans to the voters.",
      "Voters can read leaflets, watch debates and compare the different ideas.",
      "On election day, polling stations open in schools, halls and libraries.",
      "Each voter receives a ballot paper and marks it in private.",
      "No one may watch how another person votes or pressure them to vote a certain way.",
      "When voting ends, the ballot boxes are sealed and taken to be counted.",
      "Trained staff count the votes while observers from different parties watch.",
      "The results are announced in public.",
      "If the result is very close, the votes may be counted again."],
     ["Secret ballots and careful counting help everyone trust the result.",
      "A peaceful handover of power after the result is a sign of a healthy democracy.",
      "Voter intimidation, fraud and lies about how to vote are serious crimes in most countries."]),
    (["A hospital is a place where sick and injured people are cared for.",
      "Hospitals are busy places that never close.",
      "Many different people work together in a hospital."],
     ["The emergency department treats accidents and sudden illness at any hour.",
      "Patients who are very ill may stay on a ward for several days.",
      "Doctors examine patients, order tests and decide on treatment.",
      "Nurses check on patients through the day and night and give medicines.",
      "Pharmacists make sure that each patient gets the right medicine.",
      "Surgeons carry out operations in clean, carefully prepared theatres.",
      "Scans and X-rays help doctors see inside the body.",
      "Cleaners, porters and cooks also play a vital part in keeping patients safe.",
      "Patients are asked for their consent before any treatment.",
      "When a patient is well enough, the team plans how they will manage at home."],
     ["Good hospital care depends on teamwork.",
      "If you ever need a hospital in a hurry, call the emergency number.",
      "Hospitals rely on careful records and clean equipment."]),
    (["Schools help children learn and grow.",
      "Most children spend many years at school.",
      "A school is much more than a building with classrooms."],
     ["Children usually start school at around five or six years old.",
      "Teachers plan lessons in reading, writing, maths, science and other subjects.",
      "Pupils learn to work in groups and to listen to each other.",
      "Teachers notice when a pupil is struggling and offer extra help.",
      "Many schools have a library, a hall and a playground.",
      "Break times give children a chance to play and rest.",
      "Parents meet teachers to talk about how their children are doing.",
      "Schools also teach children how to stay safe and healthy.",
      "Many schools run clubs for music, sport, art and chess.",
      "Schools have rules to keep everyone safe and to stop bullying."],
     ["A good school helps every child feel that they belong.",
      "Education opens doors for the rest of a person's life.",
      "In many countries, school is free for every child."]),
    (["A public library is open to everyone.",
      "Libraries are one of the most useful places in any town.",
      "Many people do not know how much a library offers."],
     ["Anyone can join, and a library card is usually free.",
      "Members can borrow books for a few weeks at a time.",
      "Books are sorted by subject, so that similar books sit together.",
      "Librarians help people find the information they need.",
      "Many libraries lend films, music and audio books as well as books.",
      "There are computers that people can use for free.",
      "Children's corners hold story times for young readers.",
      "Some libraries run classes for people learning a new language.",
      "Quiet study areas give students a place to work."],
     ["A library card opens the door to a world of ideas.",
      "Libraries are especially important for people who cannot afford to buy many books.",
      "Libraries are warm, welcoming places for people of all ages."]),
    (["A parliament is a group of people chosen to make laws.",
      "In many countries, laws are made by a parliament.",
      "Here is a simple picture of how a parliament works."],
     ["Members are elected by voters in different areas.",
      "Members debate new laws before they vote on them.",
      "A new law is usually read and discussed several times.",
      "Members can suggest changes to a proposed law.",
      "Committees look closely at the details of each law.",
      "Members also question ministers about what the government is doing.",
      "In many systems, a second chamber checks laws as well.",
      "Debates are usually open to the public and recorded."],
     ["This careful process helps to catch mistakes before a law is passed.",
      "Citizens can contact their representative with questions or concerns.",
      "Parliaments work in public, so that people can see what is decided in their name."]),
    (["A local council runs many everyday services.",
      "Local government is often the part of government people meet most.",
      "A council is elected by the people who live in an area."],
     ["The council collects rubbish and recycling.",
      "It looks after parks, playgrounds and public toilets.",
      "It keeps streets clean and street lights working.",
      "It decides whether new buildings can be built.",
      "It checks that restaurants and cafes keep their kitchens clean.",
      "It often runs libraries and leisure centres.",
      "Councillors hold meetings that residents can attend.",
      "Residents can contact their councillor about local problems."],
     ["Taking part in local decisions is one way to improve your area.",
      "Council elections are a chance to choose who runs these services."]),
    (["The fire service protects people from fire and many other dangers.",
      "Firefighters do much more than put out fires.",
      "A fire station is ready to respond at any hour."],
     ["When an emergency call comes in, the crew can be on the road in minutes.",
      "Fire engines carry water, ladders, hoses and cutting tools.",
      "Firefighters wear heavy protective clothing and breathing equipment.",
      "Firefighters rescue people from burning buildings, crashed cars and floods.",
      "Crews practise their skills and check their equipment every day.",
      "Fire officers visit homes and schools to explain fire safety.",
      "Crews also fit smoke alarms and advise people on escape plans."],
     ["A working smoke alarm is one of the best ways to stay safe at home.",
      "If there is a fire, get out, stay out and call the emergency number."]),
    (["Police officers have an important and difficult job.",
      "The police are meant to protect the public.",
      "Here is an outline of what the police do."],
     ["Officers respond to emergency calls.",
      "Officers investigate crimes and collect evidence.",
      "The police look for missing people and help at accidents.",
      "Officers also give advice on staying safe and keeping homes secure.",
      "When officers arrest someone, they must follow the law themselves.",
      "People who are arrested have the right to know why and to speak to a lawyer.",
      "Independent bodies look into complaints about the police."],
     ["In a fair system, the police are accountable to the law like everyone else.",
      "Trust between the police and the public helps keep communities safe."]),
    (["A post office helps people send letters and parcels.",
      "Postal services connect people across towns and countries."],
     ["Customers can buy stamps and weigh parcels at the counter.",
      "Letters are collected from post boxes every day.",
      "At a sorting office, letters are sorted by area.",
      "Postal workers deliver mail to homes and businesses.",
      "Parcels can be tracked so that people know where they are.",
      "Many post offices also let people pay bills or collect pensions."],
     ["A handwritten letter is still a special thing to receive.",
      "The post keeps working in rain, wind and snow."]),
    (["A museum collects and cares for objects that tell us about the world.",
      "Museums keep the past alive.",
      "There are museums about almost everything."],
     ["Curators study objects and decide how to display them.",
      "Conservators clean and repair old and fragile things.",
      "Labels explain what each object is and where it came from.",
      "Many museums run activities for school groups.",
      "Some museums let visitors touch and try things.",
      "Staff keep careful records of every object in the collection.",
      "Some museums have returned objects to the communities they came from."],
     ["Many museums are free to visit.",
      "A museum visit can make history feel close and real."]),
    (["A bank looks after people's money.",
      "Most adults use a bank in some way.",
      "Here is a simple explanation of what a bank does."],
     ["People keep their savings in bank accounts.",
      "Banks lend money to people and businesses and charge interest.",
      "Savers may receive a small amount of interest on their money.",
      "Cards and apps let people pay for things without cash.",
      "Banks have rules to protect customers' money.",
      "A real bank will never ask for your full password by message or phone."],
     ["It is wise to keep track of what you spend and save.",
      "If a message about your bank seems strange, call the bank on a number you trust."]),
    (["A charity is an organisation that works for the public good.",
      "Charities help in many areas of life."],
     ["Some charities help people who are homeless or hungry.",
      "Others fund medical research or support people with illnesses.",
      "Many rely on volunteers who give their time for free.",
      "Charities raise money through donations, events and shops.",
      "They must report how they spend the money they receive.",
      "Some charities run helplines where people can talk in confidence."],
     ["Giving time can be as valuable as giving money.",
      "Before donating, it is sensible to check that a charity is properly registered."]),
    (["A newspaper or news website tells people what is happening.",
      "Good journalism is important in a democracy.",
      "News does not appear by magic."],
     ["Reporters find stories by talking to people and reading documents.",
      "They check facts with more than one source.",
      "Editors decide which stories to publish and check the writing.",
      "Good news outlets correct their mistakes openly.",
      "Opinion pieces should be clearly marked as opinion.",
      "A free press can report on the powerful without fear."],
     ["Readers can compare several trusted sources to get a fuller picture.",
      "Checking a story before sharing it helps stop false rumours from spreading."]),
    (["A health centre is often the first place people go when they feel unwell.",
      "Local health centres care for people of all ages."],
     ["Family doctors see patients with all kinds of problems.",
      "Nurses give vaccines, take blood tests and help people manage long-term conditions.",
      "Patients usually book an appointment in advance.",
      "Some problems can be handled by phone.",
      "The doctor may refer a patient to a specialist at a hospital.",
      "Health centres also offer check-ups and advice on staying well.",
      "What patients tell their doctor is kept confidential."],
     ["If something is urgent, the emergency number is the right call.",
      "It helps to write down your questions before an appointment."]),
]


def gen_institution(rng):
    intros, facts, closes = rng.choice(INSTITUTIONS)
    k = rng.randint(4, min(7, len(facts)))
    sents = [rng.choice(intros)] + sample_in_order(rng, facts, k)
    if rng.random() < 0.7:
        sents.append(rng.choice(closes))
    return " ".join(sents)


# ---------------------------------------------------------------------------
# Towns and places (fictional towns, present tense)
# ---------------------------------------------------------------------------

TOWN_START = ["Mill", "Oak", "Stone", "Green", "Ash", "Fair", "Red", "Black", "West",
              "North", "Bright", "Elm", "Clay", "Wood", "Brook", "Hay", "Kings", "Long",
              "Marsh", "Rose", "Salt", "Thorn", "Willow", "High", "Low", "East", "Cold",
              "Sand", "Bridge", "Fern"]
TOWN_END = ["brook", "field", "ford", "ton", "bridge", "wick", "haven", "dale", "bury",
            "more", "stead", "well", "port", "by", "ham", "worth", "cliff", "mouth",
            "combe", "gate"]
# (location, things visitors come to do, local trades)
TOWN_LOCATION = [
    ("beside a wide, slow river", ["cycle along the river", "watch the boats on the river", "explore the narrow streets"],
     ["building boats", "working at the paper mill"]),
    ("at the foot of a range of green hills", ["walk in the hills", "visit the old castle", "buy local cheese and bread"],
     ["farming", "making cheese"]),
    ("on a rocky stretch of coast", ["eat fresh fish by the harbour", "climb to the lighthouse", "walk along the cliffs"],
     ["fishing", "working in tourism"]),
    ("in a quiet valley", ["walk beside the stream", "see the old water mill", "buy local cheese and bread"],
     ["farming", "weaving cloth"]),
    ("at the edge of a large forest", ["see the autumn colours in the forest", "follow the forest trails", "watch for deer at dawn"],
     ["looking after the forests", "making furniture"]),
    ("on a flat plain of farmland", ["cycle along the quiet lanes", "visit the farm shops", "see the fields of sunflowers"],
     ["farming", "growing fruit"]),
    ("where two rivers meet", ["walk along the riverbanks", "explore the narrow streets", "visit the old bridge"],
     ["working on the railway", "running small shops"]),
    ("on the shore of a deep lake", ["swim in the lake", "sail on the lake", "walk around the shore"],
     ["fishing", "working in tourism"]),
    ("high up in the mountains", ["walk on the mountain paths", "ski in winter", "enjoy the clean mountain air"],
     ["keeping sheep and goats", "working in tourism"]),
    ("near the mouth of a river", ["watch the birds on the mudflats", "eat fresh fish by the harbour", "walk along the sea wall"],
     ["fishing", "building boats"]),
    ("between the sea and the marshes", ["watch the birds on the marshes", "walk along the beach", "eat fresh fish by the harbour"],
     ["fishing", "growing vegetables"]),
]
TOWN_SIZE = [("a small village", "village", "a few hundred"),
             ("a quiet village", "village", "about five hundred"),
             ("a market town", "town", "about ten thousand"),
             ("a small town", "town", "a few thousand"),
             ("a busy town", "town", "about thirty thousand"),
             ("a growing city", "city", "over a hundred thousand")]
TOWN_SERVICES = {"village": "The village has a primary school, a shop and a small library.",
                 "town": "The town has {n} schools, a health centre and a library.",
                 "city": "The city has many schools, a large hospital and a university."}
TOWN_WORK = ["teaching at the college", "working at the hospital", "running small shops",
             "making furniture", "working in offices", "repairing cars and machines"]
TOWN_LANDMARK = [
    "an old stone church with a tall tower", "a bridge that is more than five hundred years old",
    "a small castle on a hill", "a windmill that still grinds flour", "a red brick town hall with a clock",
    "a tall stone clock tower", "a market hall with a glass roof", "an old water mill by the river",
    "an old covered market", "a library that was once a railway station", "a stone market cross",
    "a park with a bandstand",
]
TOWN_FESTIVAL = ["a music festival", "a craft fair", "a boat race", "a flower show",
                 "a cheese market", "a lantern parade", "a kite festival", "a food fair",
                 "a book festival", "a sheep show", "a street party", "a running race"]
TOWN_TRANSPORT = ["A train runs to the nearest city every hour.", "Buses connect the {unit} to nearby villages.",
                  "The nearest railway station is a short bus ride away.",
                  "A small ferry crosses to the other side of the water.",
                  "Most people get around on foot or by bicycle.",
                  "A winding road leads down the valley to the main road."]
TOWN_HISTORY = [
    "The {unit} grew up around a river crossing in the Middle Ages.",
    "Long ago, the {unit} was famous for its wool market.",
    "The {unit} began as a small settlement of farmers.",
    "The railway arrived a hundred and fifty years ago and the {unit} grew quickly.",
    "For centuries, the {unit} was a stop for travellers on the road to the coast.",
    "Old records show that people have lived here for more than a thousand years.",
]


def town_name(rng):
    while True:
        s, e = rng.choice(TOWN_START), rng.choice(TOWN_END)
        if s.lower()[-1] != e[0]:
            return s + e


def gen_town(rng):
    t = town_name(rng)
    kind, unit, pop = rng.choice(TOWN_SIZE)
    loc, visits, trades = rng.choice(TOWN_LOCATION)
    work = [rng.choice(trades), rng.choice(TOWN_WORK)]
    rng.shuffle(work)
    d = {"T": t, "kind": kind, "unit": unit, "pop": pop, "loc": loc,
         "dir": rng.choice(["north", "south", "east", "west"]),
         "w0": work[0], "w1": work[1], "lm": rng.choice(TOWN_LANDMARK),
         "day": rng.choice(DAYS), "m": rng.choice(MONTHS), "f": rng.choice(TOWN_FESTIVAL),
         "v": rng.choice(visits), "n": rng.choice(["two", "three", "four"]),
         "adj": rng.choice(["cold", "wet", "windy", "snowy"])}
    first = rng.choice(["{T} is {kind} {loc}.", "The {unit} of {T} lies {loc}.",
                        "{T} lies {loc}.", "If you travel {dir} from the capital, you will find {T}."])
    sents = [first]
    if "{kind}" not in first:
        sents.append("It is {kind} with {pop} people.")
    else:
        sents.append(cap(pop) + " people live there.")
    body = [
        "Many people in {T} earn a living by {w0} or {w1}.",
        "The best-known building is {lm}.",
        "Every {day}, there is a market in the main square.",
        "In {m}, the {unit} holds {f}.",
        "Visitors often come to {v}.",
        rng.choice(TOWN_TRANSPORT),
        rng.choice(TOWN_HISTORY),
        TOWN_SERVICES[unit],
        "In winter, the {adj} weather keeps most people indoors.",
    ]
    sents += rng.sample(body, rng.randint(3, 5))
    if rng.random() < 0.4:
        ends = ["People in {T} say it is a friendly place to live.",
                "Many families have lived in {T} for generations.",
                "Newcomers often say they felt at home in {T} very quickly."]
        if unit != "city":
            ends.append("Like many small places, {T} is working hard to keep its shops and services open.")
        sents.append(rng.choice(ends))
    return " ".join(x.format(**d) for x in sents)


# ---------------------------------------------------------------------------
# Seasons and weather
# ---------------------------------------------------------------------------

SEASON_FACTS = {
    "spring": ["The days grow longer and the air becomes warmer.",
               "Buds open on the trees and the first flowers appear.",
               "Birds build nests and sing loudly in the early morning.",
               "Farmers sow seeds in the fields.",
               "Lambs are born on many farms.",
               "The weather can change quickly, with sunshine one hour and showers the next.",
               "Gardeners start planting vegetables.",
               "Frogs lay their eggs in ponds."],
    "summer": ["The days are long and the nights are short.",
               "The sun is high in the sky and the weather is often warm.",
               "Fruit such as strawberries and cherries ripens.",
               "Many families take holidays by the sea or in the hills.",
               "Farmers cut grass to make hay.",
               "On hot days it is important to drink plenty of water and find shade.",
               "Bees and butterflies are busy among the flowers.",
               "Thunderstorms sometimes break the heat."],
    "autumn": ["The days grow shorter and the air turns cool.",
               "Leaves turn yellow, orange and red before they fall.",
               "Farmers bring in the harvest.",
               "Squirrels bury nuts to eat later.",
               "Many birds fly to warmer places for the winter.",
               "Mist often lies in the valleys in the early morning.",
               "Apples and pears are ready to pick.",
               "Strong winds blow the last leaves from the trees."],
    "winter": ["The days are short and the nights are long and cold.",
               "In many places, frost covers the ground in the morning.",
               "Snow sometimes falls, and children build snowmen.",
               "Many trees stand bare without their leaves.",
               "Some animals sleep through the coldest months.",
               "People wear warm coats, hats and gloves.",
               "It is a good time to check on older neighbours who may feel the cold.",
               "Birds are glad of food and water left out in gardens."],
}
SEASON_OPENINGS = ["{S} is the season between {prev} and {next}.",
                   "In {season}, the world outside changes in many ways.",
                   "Many people say {season} is their favourite season.",
                   "{S} comes after {prev}."]
SEASON_ORDER = ["spring", "summer", "autumn", "winter"]


def gen_season(rng):
    i = rng.randrange(4)
    season = SEASON_ORDER[i]
    d = {"season": season, "S": cap(season), "prev": SEASON_ORDER[i - 1], "next": SEASON_ORDER[(i + 1) % 4]}
    sents = [rng.choice(SEASON_OPENINGS).format(**d)]
    facts = rng.sample(SEASON_FACTS[season], rng.randint(3, 5))
    sents += facts
    if rng.random() < 0.5:
        sents.append(rng.choice([
            "Each season has its own beauty.",
            "In places near the equator, the seasons are very different, with wet and dry times of year instead.",
            "Of course, the seasons are reversed in the southern half of the world.",
            "Many festivals around the world mark the change of season.",
        ]))
    return " ".join(sents)


# ---------------------------------------------------------------------------
# Everyday objects
# Fields: name, plural, use (base verb phrase), material, where found, extra
# ---------------------------------------------------------------------------

OBJECTS = [
    ("spoon", "spoons", "stir, scoop and eat food", "metal, wood or plastic", "in a kitchen drawer",
     "Spoons are among the oldest tools people have used for eating."),
    ("kettle", "kettles", "boil water", "metal or plastic", "in most kitchens",
     "An electric kettle switches itself off when the water boils."),
    ("umbrella", "umbrellas", "keep the rain off", "cloth stretched over a metal frame", "by the front door",
     "Umbrellas were first used to give shade from the sun."),
    ("ladder", "ladders", "reach high places", "wood or metal", "in a shed or garage",
     "A ladder should always stand on firm, flat ground."),
    ("clock", "clocks", "show the time", "wood, metal or plastic", "on a wall or a shelf",
     "Some old clocks need to be wound up by hand every week."),
    ("candle", "candles", "give light", "wax with a cotton wick", "in a drawer for power cuts",
     "A burning candle should never be left alone."),
    ("bucket", "buckets", "carry water and other things", "plastic or metal", "under the sink or in the garden",
     "Children use small buckets to build sandcastles."),
    ("pencil", "pencils", "write and draw", "wood with a core of graphite", "in a pencil case or a desk",
     "A pencil line can be rubbed out with an eraser."),
    ("map", "maps", "find the way", "paper", "in a car or a backpack",
     "Maps use symbols and a key to show roads, rivers and buildings."),
    ("blanket", "blankets", "keep people warm", "wool or cotton", "on a bed or a sofa",
     "Blankets are often given to people after a rescue to keep them warm."),
    ("hammer", "hammers", "knock in nails", "metal and wood", "in a toolbox",
     "It is wise to wear safety glasses when using a hammer."),
    ("torch", "torches", "light the way in the dark", "plastic or metal, with a bulb and batteries",
     "in a drawer or a car", "A torch is useful during a power cut."),
    ("basket", "baskets", "carry shopping or store things", "woven reeds, willow or plastic",
     "in a kitchen or a hall", "People have woven baskets for thousands of years."),
    ("kite", "kites", "fly in the wind for fun", "light cloth or paper on a thin frame", "in a cupboard or a toy box",
     "Kites should be flown in open spaces, far from power lines."),
    ("mirror", "mirrors", "see a reflection", "glass with a shiny backing", "in a bathroom or a hall",
     "Mirrors are also used in cars so drivers can see behind them."),
    ("thermometer", "thermometers", "measure temperature", "glass or plastic", "in a first aid box",
     "Doctors and nurses use thermometers to check for a fever."),
    ("compass", "compasses", "find which way is north", "plastic or metal, with a magnetic needle inside", "in a walker's pocket",
     "A compass works because the Earth acts like a giant magnet."),
    ("needle", "needles", "sew cloth", "thin steel", "in a sewing box",
     "Thread passes through a small hole at one end of the needle, called the eye."),
    ("broom", "brooms", "sweep floors and paths", "wood or plastic, with stiff bristles", "in a cupboard",
     "Sweeping dust outside keeps a house cleaner."),
    ("bicycle", "bicycles", "travel from place to place", "metal, with rubber tyres", "in a shed or on the street",
     "Cycling is good exercise and does not pollute the air."),
    ("calendar", "calendars", "keep track of days and plans", "paper", "on a wall or a desk",
     "Many families write birthdays and appointments on a calendar."),
    ("teapot", "teapots", "make and pour tea", "china, glass or metal", "in a kitchen",
     "A knitted cover called a tea cosy keeps a teapot warm."),
    ("saucepan", "saucepans", "cook soups, sauces and vegetables", "metal", "in a kitchen cupboard",
     "The handle of a saucepan should be turned away from the edge of the cooker."),
    ("fridge", "fridges", "keep food cold and fresh", "metal and plastic", "in almost every kitchen",
     "A fridge works by moving heat from inside to the outside."),
    ("smoke alarm", "smoke alarms", "warn people about a fire", "plastic", "on the ceiling",
     "A smoke alarm should be tested once a month."),
    ("first aid kit", "first aid kits", "treat small cuts and injuries", "plastic or cloth, with plasters, bandages and wipes inside",
     "in a kitchen cupboard or a car", "It is wise to check a first aid kit now and then and replace anything used."),
    ("backpack", "backpacks", "carry things on your back", "strong cloth", "in a hall or a bedroom",
     "A heavy backpack should be worn on both shoulders."),
    ("wheelbarrow", "wheelbarrows", "move soil, stones and plants", "metal or plastic, with one wheel at the front",
     "in a garden shed", "A wheelbarrow makes heavy loads much easier to move."),
    ("chair", "chairs", "sit on", "wood, metal or plastic", "in almost every room",
     "A good chair supports the back."),
    ("envelope", "envelopes", "hold a letter", "paper", "in a desk drawer",
     "The address goes on the front of the envelope and the stamp in the top corner."),
    ("glove", "gloves", "keep hands warm or clean", "wool, leather or rubber", "in a coat pocket",
     "Rubber gloves protect the hands when washing up."),
    ("rope", "ropes", "tie, pull and lift things", "twisted fibres", "on boats and in garages",
     "Sailors learn many different knots for tying ropes."),
    ("scale", "scales", "weigh things", "metal or plastic", "in a kitchen or a bathroom",
     "Bakers use scales to measure flour exactly."),
    ("watering can", "watering cans", "water plants", "plastic or metal", "in a garden or on a balcony",
     "A watering can with a fine spout is gentle on young seedlings."),
    ("ruler", "rulers", "measure and draw straight lines", "wood, plastic or metal", "in a pencil case",
     "Most rulers show both centimetres and inches."),
]


def obj_slots(o):
    name, pl, use, mat, where, extra = o
    return {"o": name, "o_a": a(name), "O_a": cap(a(name)), "pl": pl, "Pl": cap(pl),
            "use": use, "mat": mat, "where": where, "extra": extra}


def gen_object(rng):
    o = rng.choice(OBJECTS)
    d = obj_slots(o)
    if rng.random() < 0.5:
        sents = [rng.choice(["{O_a} is used to {use}.", "People use {pl} to {use}.",
                             "{Pl} help us {use}."]),
                 rng.choice(["Most {pl} are made of {mat}.", "{Pl} are usually made of {mat}."]),
                 rng.choice(["You can usually find {o_a} {where}.", "{Pl} are often kept {where}."]),
                 "{extra}"]
        if rng.random() < 0.4:
            o2 = obj_slots(rng.choice([x for x in OBJECTS if x is not o]))
            sents.append(rng.choice(["{O_a} is another useful object. It is used to {use}.",
                                     "Another everyday object is {o_a}, which people use to {use}."]).format(**o2))
        return " ".join(s.format(**d) for s in sents)
    pairs = [("Q: What is {o_a} for?", "A: {O_a} is used to {use}. {extra}"),
             ("Q: What are {pl} made of?", "A: Most {pl} are made of {mat}."),
             ("Q: Where would I find {o_a}?", "A: You can usually find {o_a} {where}.")]
    chosen = sample_in_order(rng, pairs, rng.choice([2, 3]))
    return "\n".join((q + "\n" + ans).format(**d) for q, ans in chosen)


# ---------------------------------------------------------------------------
# Advice. Each topic: intro phrase (noun phrase after "for"), tips (base verb
# phrases), and closing sentences.
# ---------------------------------------------------------------------------

ADVICE = [
    ("sleeping well",
     ["go to bed at about the same time each night", "keep your bedroom dark, quiet and cool",
      "put screens away an hour before bed", "avoid coffee and tea late in the day",
      "get some daylight and exercise during the day", "read a book or listen to calm music before sleep",
      "write down your worries so they do not keep you awake"],
     ["If you feel tired all the time, it is a good idea to talk to a doctor."]),
    ("handling stress",
     ["break big tasks into small steps", "take short breaks during the day",
      "go for a walk in the fresh air", "breathe slowly and deeply for a minute",
      "talk about your worries with someone you trust", "eat regular meals",
      "make time for things you enjoy"],
     ["If stress feels too much to handle, a doctor or counsellor can help.",
      "Everyone feels stressed sometimes, and asking for help is a sensible step."]),
    ("studying for a test",
     ["start early rather than the night before", "make a simple timetable",
      "test yourself instead of only reading your notes", "explain a topic out loud as if teaching someone",
      "take a short break every half hour", "get a good night's sleep before the test",
      "ask your teacher about anything you do not understand"],
     ["Small steps every day add up to a lot.", "Do your best, and remember that one test does not decide your future."]),
    ("eating well",
     ["eat plenty of fruit and vegetables", "drink water instead of sugary drinks",
      "choose wholegrain bread and rice when you can", "cook simple meals at home",
      "eat slowly and enjoy your food", "keep sweets and crisps as an occasional treat",
      "include beans, lentils, fish, eggs or other foods with protein"],
     ["If you have questions about your diet, a doctor or dietitian can give advice.",
      "A balanced diet does not have to be expensive."]),
    ("staying active",
     ["walk or cycle for short journeys", "take the stairs instead of the lift",
      "find a sport or activity you enjoy", "exercise with a friend to keep each other going",
      "stretch gently after sitting for a long time", "start slowly and build up little by little",
      "dance in the kitchen while you cook"],
     ["If you have a health condition, check with a doctor before starting a new kind of exercise.",
      "Any movement is better than none."]),
    ("saving money",
     ["write down what you spend for a month", "set a simple budget", "cook at home more often",
      "compare prices before you buy", "put a little aside as soon as you are paid",
      "repair things instead of replacing them", "wait a day before buying something you do not need"],
     ["Small savings add up over time.", "Free advice about money is available from many advice centres."]),
    ("staying safe online",
     ["use a different strong password for each account", "turn on two-step login",
      "think before you click on links in messages", "keep your devices up to date",
      "be careful about sharing your address or location", "block and report people who make you uncomfortable",
      "tell someone you trust if something online worries you"],
     ["Real banks will never ask for your full password.", "If something seems too good to be true, it probably is."]),
    ("being a good friend",
     ["listen more than you talk", "remember important days", "keep the secrets that friends share, unless someone is in danger",
      "say sorry when you get something wrong", "show up when a friend needs help",
      "be happy for your friends when things go well", "respect your friends' choices, even when they differ from yours"],
     ["Good friendships take time and care.", "A true friend treats you with respect."]),
    ("being a good neighbour",
     ["say hello when you see your neighbours", "keep noise down late at night",
      "offer to help an older neighbour with shopping", "keep shared spaces tidy",
      "let neighbours know before a party", "talk calmly if there is a problem"],
     ["Good neighbours make a street feel like a community.",
      "If a problem cannot be solved by talking, a local mediation service may help."]),
    ("handling a disagreement",
     ["take a breath before you reply", "listen to the other person without interrupting",
      "talk about how you feel instead of blaming", "stick to the problem at hand",
      "look for a solution that works for both of you", "take a break if voices are getting raised",
      "accept that you may not agree on everything"],
     ["Disagreements are normal, and they can be solved without shouting or threats.",
      "If you ever feel unsafe, leave and ask for help."]),
    ("talking about politics respectfully",
     ["listen to understand, not only to reply", "check facts with reliable sources",
      "focus on ideas rather than attacking people", "accept that people have different values and experiences",
      "admit when you are not sure about something", "avoid sharing stories you have not checked",
      "end the conversation kindly if it gets heated"],
     ["People can disagree about politics and still respect each other.",
      "In a democracy, every citizen is free to form their own view and to vote in secret."]),
    ("checking news before you share it",
     ["look at who published the story", "see whether other trusted sources report the same thing",
      "check the date, because old stories are often shared again", "read beyond the headline",
      "be careful with posts that make you very angry or afraid", "look for the original source of a photo"],
     ["Sharing only what you have checked helps stop false rumours.",
      "Fact-checking websites can help you decide whether a story is true."]),
    ("staying safe in hot weather",
     ["drink plenty of water through the day", "stay in the shade in the middle of the day",
      "wear a hat and light, loose clothes", "keep curtains closed on sunny windows",
      "check on older neighbours and young children", "never leave anyone in a parked car"],
     ["If someone feels dizzy, confused or very unwell in the heat, get medical help quickly."]),
    ("staying warm in winter",
     ["wear several thin layers", "keep the room you use most warm", "eat hot meals and drinks",
      "keep moving during the day", "check on older neighbours", "keep a torch ready in case of a power cut"],
     ["Many councils and charities offer help with heating costs.",
      "Cold weather can be hard on health, so it is worth asking for help early."]),
    ("caring for a pet",
     ["give fresh water every day", "feed the right amount of the right food",
      "take dogs for a walk at least once a day", "keep the bed or cage clean",
      "take your pet to the vet for check-ups", "give your pet time, play and attention"],
     ["A pet is a commitment for many years.", "A vet can answer questions about your pet's health."]),
    ("starting a new job",
     ["arrive a little early on the first day", "write down the names of the people you meet",
      "ask questions when you are not sure", "learn how things are done before suggesting changes",
      "be friendly to everyone, whatever their role", "take your breaks"],
     ["Everyone feels new at first, and it gets easier.", "It is normal to feel tired in the first few weeks."]),
    ("supporting a friend who feels low",
     ["ask how they are and really listen", "spend time with them, even doing something simple",
      "avoid telling them to cheer up", "offer practical help", "keep in touch with a message",
      "gently suggest talking to a doctor or counsellor"],
     ["If you think your friend might be in danger, contact emergency services or a crisis line straight away.",
      "Look after yourself too, and talk to someone you trust."]),
    ("standing up against unfair treatment",
     ["speak up when someone is mocked for who they are", "support the person who is being targeted",
      "report discrimination to a teacher, manager or other person in charge",
      "question jokes that rely on stereotypes", "learn about the experiences of people different from you",
      "treat every person as an individual"],
     ["Everyone deserves to be treated with dignity and fairness.",
      "Small actions by many people can change how a place feels."]),
    ("feeling good about your body",
     ["remember that photos in adverts are often edited", "focus on what your body can do",
      "spend time with people who value you for who you are", "wear clothes that feel comfortable",
      "limit time on apps that make you feel worse about yourself", "speak to yourself as kindly as you would to a friend"],
     ["Beauty standards change from place to place and from year to year, and no one look is correct.",
      "If worries about food or appearance take over daily life, a doctor can help."]),
    ("building a healthy relationship",
     ["talk honestly about how you feel", "respect each other's friends and free time",
      "make decisions together", "listen when your partner says no",
      "give each other privacy", "sort out disagreements calmly"],
     ["In a healthy relationship, both people feel safe and respected.",
      "Jealousy, threats and control are warning signs, and support services can help."]),
    ("crossing the road safely",
     ["use a proper crossing when there is one", "stop at the edge of the pavement",
      "look both ways and listen", "wait until the road is clear", "keep looking as you cross",
      "put your phone away while crossing"],
     ["Children should cross with an adult until they are old enough to judge traffic.",
      "Bright clothes help drivers see you at night."]),
    ("reducing waste at home",
     ["plan meals so you buy only what you need", "take your own bag when shopping",
      "use leftovers for lunch the next day", "mend clothes when you can",
      "sort recycling carefully", "give away things you no longer use"],
     ["Less waste saves money as well as resources.", "Every small change helps."]),
    ("preparing for a doctor's appointment",
     ["write down your symptoms and when they started", "make a list of any medicines you take",
      "write down the questions you want to ask", "bring someone with you if you would like support",
      "tell the doctor if you do not understand something", "ask what to do if things get worse"],
     ["Doctors are there to help, and no question is too small.",
      "If symptoms suddenly become severe, call the emergency number."]),
    ("keeping children safe at home",
     ["keep medicines and cleaning products locked away", "fit a guard in front of fires",
      "keep hot drinks out of reach", "use stair gates for very young children",
      "test smoke alarms every month", "teach children their address and how to call for help"],
     ["Most accidents at home can be prevented with a few simple steps."]),
    ("volunteering",
     ["think about what you enjoy and what you are good at", "ask at your library or community centre",
      "start with a small amount of time", "be reliable when you say you will help",
      "ask for training if you need it", "enjoy meeting new people"],
     ["Volunteering helps others and often makes volunteers feel happier too."]),
]

ADVICE_INTROS = ["Here are some simple ideas for {t}.", "A few habits can help with {t}.",
                 "Many people ask for tips on {t}.", "Here is some practical advice on {t}.",
                 "When it comes to {t}, small steps make a big difference."]
ADVICE_FORMS = ["{Tip}.", "It helps to {tip}.", "Try to {tip}.", "It is a good idea to {tip}.",
                "Remember to {tip}.", "You can also {tip}."]


def render_tip(rng, tip, i, used):
    if tip.startswith(("try", "avoid", "do not", "never", "remember")):
        form = "{Tip}."
    else:
        forms = ADVICE_FORMS if i > 0 else ADVICE_FORMS[:4]
        form = rng.choice([f for f in forms if f == "{Tip}." or f not in used])
        used.append(form)
    if form == "{Tip}." and i > 0 and rng.random() < 0.3:
        form = rng.choice(["Also, {tip}.", "Next, {tip}.", "And {tip}."])
    return form.format(tip=tip, Tip=cap(tip))


def gen_advice(rng):
    topic, tips, closes = rng.choice(ADVICE)
    chosen = sample_in_order(rng, tips, rng.randint(3, 5))
    sents = [rng.choice(ADVICE_INTROS).format(t=topic)]
    used = []
    sents += [render_tip(rng, t, i, used) for i, t in enumerate(chosen)]
    if rng.random() < 0.8:
        sents.append(rng.choice(closes))
    return " ".join(sents)


# ---------------------------------------------------------------------------
# How-to instructions: ordered steps, rendered with sequence words.
# ---------------------------------------------------------------------------

HOWTO = [
    ("make a cup of tea",
     ["fill the kettle with fresh water and switch it on", "warm the mug with a little hot water",
      "put a tea bag in the mug", "pour the boiling water over the tea bag",
      "let it stand for three or four minutes", "take out the tea bag",
      "add milk or lemon if you like it", "let it cool a little before you drink it"]),
    ("plant a seed in a pot",
     ["choose a small pot with holes in the bottom", "fill it with soft compost",
      "make a small hole with your finger", "drop the seed into the hole",
      "cover it gently with soil", "water it carefully", "put the pot in a warm, bright place",
      "check the soil every day and keep it damp"]),
    ("wash your hands properly",
     ["wet your hands with clean running water", "put some soap on your hands",
      "rub your palms together", "rub the backs of your hands", "clean between your fingers",
      "scrub your thumbs and fingertips", "rinse your hands under the water", "dry them with a clean towel"]),
    ("fix a flat bicycle tyre",
     ["take the wheel off the bicycle", "let out any air that is left", "lever the tyre off the rim",
      "pull out the inner tube", "pump a little air into the tube and listen for the hole",
      "rough up the area around the hole and put on a patch", "check the inside of the tyre for anything sharp",
      "put the tube back and pump up the tyre"]),
    ("write a thank-you letter",
     ["start with a friendly greeting", "say clearly what you are thanking the person for",
      "explain why it meant a lot to you", "add a little news about yourself",
      "say that you hope to see them soon", "finish with a warm goodbye and your name"]),
    ("pack for a day walk",
     ["check the weather forecast", "choose comfortable shoes that you have worn before",
      "pack a bottle of water and a snack", "add a light waterproof jacket",
      "bring a map and a charged phone", "tell someone where you are going and when you will be back"]),
    ("clean a window",
     ["choose a cloudy day so the glass does not dry too quickly", "brush away dust and cobwebs",
      "mix warm water with a little washing-up liquid", "wash the glass with a soft cloth",
      "wipe the water off with a rubber blade from top to bottom", "polish any marks with a dry cloth"]),
    ("make your bed",
     ["open the window to let in fresh air", "pull the bottom sheet tight and tuck it in",
      "shake the pillows and put them at the top", "spread the duvet or blanket evenly",
      "fold the top edge back neatly", "put any cushions on top"]),
    ("sew on a button",
     ["thread a needle and tie a knot at the end", "hold the button in the right place",
      "push the needle up through the cloth and one hole of the button", "push it down through the opposite hole",
      "repeat this five or six times", "wind the thread a few times under the button",
      "tie off the thread on the back and cut it"]),
    ("look after a cut",
     ["wash your hands first", "press on the cut with a clean cloth to stop any bleeding",
      "rinse the cut gently with clean water", "pat the skin dry",
      "cover the cut with a plaster or a clean dressing", "change the dressing if it gets wet or dirty",
      "see a doctor or nurse if the cut is deep, will not stop bleeding or looks infected"]),
    ("prepare for a job interview",
     ["read about the employer and the job", "think of examples of things you have done well",
      "prepare a few questions to ask", "choose clean, comfortable clothes",
      "plan your journey and leave plenty of time", "arrive a few minutes early",
      "listen carefully and answer honestly", "thank the interviewers at the end"]),
    ("register to vote",
     ["find the official registration website or office for your area", "check that you are old enough to vote",
      "have your name, address and date of birth ready", "fill in the form carefully",
      "send it before the deadline", "check later that your name is on the register"]),
    ("plan a small party",
     ["choose a date and a place", "make a list of guests", "send invitations in good time",
      "plan simple food and drinks", "ask guests about any allergies", "tidy up and decorate on the day",
      "welcome your guests and enjoy yourself"]),
    ("start a compost heap",
     ["choose a shady corner of the garden", "put down a layer of twigs for air",
      "add vegetable peelings, fruit scraps and grass cuttings", "mix in torn cardboard and dry leaves",
      "keep the heap damp but not soaking", "turn it with a fork every few weeks",
      "use the dark, crumbly compost on your garden after several months"]),
    ("make a budget",
     ["add up the money you receive each month", "list the bills you must pay",
      "write down how much you usually spend on food and travel", "see how much is left over",
      "decide how much to save", "check your spending each week", "change the plan if it does not work"]),
    ("help someone who has fainted",
     ["check that the area is safe", "lay the person on their back",
      "raise their legs a little if you can", "loosen any tight clothing",
      "stay with them and talk calmly as they wake", "call the emergency number if they do not wake up quickly or seem unwell"]),
    ("make a paper boat",
     ["take a rectangle of paper", "fold it in half from top to bottom",
      "fold the top corners down to the middle", "fold the bottom strips up on both sides",
      "open the middle and flatten it into a square", "fold the bottom points up to the top",
      "pull the sides apart gently to form the boat"]),
    ("learn a new word every day",
     ["choose a small notebook", "write one new word at the top of a page each morning",
      "write what it means in simple words", "use it in a sentence of your own",
      "say the word out loud a few times", "try to use it in conversation during the day",
      "look back over the week's words on Sunday"]),
    ("get ready for school in the morning",
     ["pack your bag the night before", "get up when the alarm rings", "wash and get dressed",
      "eat a good breakfast", "brush your teeth", "check that you have your homework", "leave on time"]),
    ("bake a simple loaf of bread",
     ["mix flour, yeast and a pinch of salt in a large bowl", "add warm water and stir to make a dough",
      "knead the dough for about ten minutes until it is smooth", "cover the bowl and leave it somewhere warm",
      "wait until the dough has doubled in size", "shape it into a loaf and put it on a tray",
      "bake it in a hot oven for about half an hour", "let it cool before you cut it"]),
]

SEQ_WORDS = ["Then", "Next,", "After that,", "Now", "When that is done,"]


def gen_howto(rng):
    task, steps = rng.choice(HOWTO)
    k = rng.randint(max(4, len(steps) - 2), len(steps))
    chosen = sample_in_order(rng, steps, k)
    intro = rng.choice(["How to {t}.", "Here is how to {t}.", "If you want to {t}, follow these steps.",
                        "It is easy to {t} if you take it step by step.", "This is a simple way to {t}."])
    sents = [intro.format(t=task)]
    used = []
    for i, st in enumerate(chosen):
        if i == 0:
            pre = rng.choice(["First, ", "To begin, ", "Start by doing this: ", ""])
            sents.append(cap(pre + st) + "." if pre != "Start by doing this: " else "First, " + st + ".")
        elif i == len(chosen) - 1:
            sents.append(rng.choice(["Finally, ", "Last of all, ", "At the end, "]) + st + ".")
        elif rng.random() < 0.5:
            w = rng.choice([x for x in SEQ_WORDS if x not in used] or SEQ_WORDS)
            used.append(w)
            sents.append(w + " " + st + ".")
        else:
            sents.append(cap(st) + ".")
    if rng.random() < 0.4:
        sents.append(rng.choice(["That is all there is to it.", "With a little practice, it becomes easy.",
                                 "Take your time, and do not worry if it is not perfect the first time.",
                                 "Ask someone to help you the first time if you are unsure."]))
    return " ".join(sents)


# ---------------------------------------------------------------------------
# Recipes made from ingredient lists
# ---------------------------------------------------------------------------

RECIPES = [
    ("vegetable soup",
     ["an onion", "two carrots", "a potato", "a leek", "a stick of celery", "a small piece of pumpkin",
      "three tomatoes", "a handful of green beans", "a parsnip", "half a cabbage"],
     ["Chop {ings} into small pieces.", "Warm a spoon of oil in a large pan.",
      "Cook the vegetables gently for five minutes, stirring now and then.",
      "Pour in enough water or stock to cover them, and add a pinch of salt.",
      "Let the soup simmer for about {mins} minutes, until everything is soft.",
      "Serve it hot with {side}."]),
    ("fresh salad",
     ["a lettuce", "a cucumber", "four tomatoes", "a red pepper", "a handful of spinach",
      "a grated carrot", "a small red onion", "some radishes", "a few sprigs of mint", "an avocado"],
     ["Wash {ings} in cold water.", "Cut everything into small, bite-sized pieces.",
      "Put the pieces in a large bowl.", "Mix a little oil, lemon juice and salt in a cup.",
      "Pour the dressing over the salad just before you eat it.", "Serve it with {side}."]),
    ("vegetable stir-fry",
     ["a pepper", "an onion", "a carrot", "a handful of mushrooms", "some broccoli", "a handful of peas",
      "a few spring onions", "some bean sprouts", "a courgette", "a small cabbage"],
     ["Slice {ings} into thin strips.", "Heat a little oil in a wide pan or wok until it is hot.",
      "Add the harder vegetables first and stir them quickly.",
      "After two minutes, add the softer vegetables.", "Add a splash of soy sauce and keep stirring for a few more minutes.",
      "Serve it at once with {side}."]),
    ("fruit salad",
     ["an apple", "a pear", "a banana", "an orange", "a handful of grapes", "a few strawberries",
      "a slice of melon", "a kiwi fruit", "a peach", "a handful of blueberries"],
     ["Wash {ings}.", "Peel the fruit that needs peeling.", "Cut everything into small pieces.",
      "Put the pieces in a bowl and squeeze a little orange juice over them.",
      "Stir gently and keep the bowl cool until you eat it.", "Serve it on its own or with {side2}."]),
    ("simple stew",
     ["an onion", "two carrots", "two potatoes", "a handful of mushrooms", "a sweet potato", "a pepper",
      "a leek", "a parsnip", "a small squash", "a stick of celery"],
     ["Chop {ings} into chunks.", "Warm a little oil in a heavy pot.",
      "Add the vegetables and stir them for a few minutes.", "Add a tin of tomatoes and a tin of beans.",
      "Pour in a cup of water and add herbs and a pinch of salt.",
      "Cover the pot and let it cook slowly for about {mins} minutes.", "Serve the stew with {side}."]),
]
RECIPE_SIDES = ["fresh bread", "rice", "a baked potato", "crusty rolls", "boiled noodles", "flatbread", "toast"]
RECIPE_SIDES2 = ["plain yoghurt", "a spoon of cream", "a sprinkle of oats", "a few chopped nuts"]


def lower_first(s):
    return s[:1].lower() + s[1:]


def gen_recipe(rng):
    name, ingredients, steps = rng.choice(RECIPES)
    generic = "the fruit" if "fruit" in name else "the vegetables"
    ings = sample_in_order(rng, ingredients, rng.randint(3, 5))
    d = {"ings": join_list(ings), "mins": rng.choice(["twenty", "thirty", "forty", "twenty-five"]),
         "side": rng.choice(RECIPE_SIDES), "side2": rng.choice(RECIPE_SIDES2),
         "r": name, "r_a": a(name), "R_a": cap(a(name))}
    intro = rng.choice(["This is an easy recipe for {r_a}.", "Here is how to make {r_a} at home.",
                        "To make {r_a}, you need {ings}.", "{R_a} is quick to make and good for you."])
    sents = [intro.format(**d)]
    listed = "{ings}" in intro
    if not listed and rng.random() < 0.6:
        sents.append("You will need {ings}.".format(**d))
        listed = True
    if listed:
        d["ings"] = generic
    for i, st in enumerate(steps):
        st = st.format(**d)
        if i == 0 and rng.random() < 0.5:
            st = "First, " + lower_first(st)
        elif i == len(steps) - 1 and rng.random() < 0.6:
            st = rng.choice(["Finally, ", "When it is ready, "]) + lower_first(st)
        sents.append(st)
    if rng.random() < 0.4:
        sents.append(rng.choice(["Any leftovers will keep in the fridge for a day or two.",
                                 "You can change the ingredients to use whatever you have.",
                                 "Children can help with washing and stirring.",
                                 "If anyone has a food allergy, check every ingredient carefully."]))
    return " ".join(sents)


# ---------------------------------------------------------------------------
# Question-and-answer sheets. Each topic has a title and Q/A pairs; a
# document takes two to four pairs in random order.
# ---------------------------------------------------------------------------

FAQ = [
    ("voting", [
        ("Who can vote?", "In most democracies, adult citizens who are registered can vote. The exact rules, such as the minimum age, depend on the country."),
        ("Is my vote secret?", "Yes. You mark your ballot alone in a booth, and no one is allowed to see how you voted or to make you show them."),
        ("What should I bring to the polling station?", "It depends on the rules where you live. Some places ask for photo identification, and others only need your name and address. Official election websites explain what is needed."),
        ("What if I cannot get to the polling station?", "Many places let people vote by post or in advance, or let a trusted person vote on their behalf. You usually need to apply before a deadline."),
        ("What should I do if someone tries to pressure me about my vote?", "Your vote is your own choice. Pressuring or threatening a voter is against the law in most countries. You can report it to the election staff or to the police."),
        ("How are votes counted?", "Trained staff count the ballots by hand or with checked machines, while observers from different parties watch. Close results can be counted again."),
        ("Where can I find fair information about the candidates?", "Official election websites, leaflets from every candidate and news outlets with a record of accuracy are good places to start. Comparing several sources gives a fuller picture."),
        ("What happens if I make a mistake on my ballot paper?", "Do not put it in the box. Ask the staff for a new one. They will cancel the spoiled paper and give you another."),
    ]),
    ("the library", [
        ("How do I join the library?", "Ask at the desk. You usually need to show something with your name and address, and the card is free."),
        ("How many books can I borrow?", "It depends on the library, but most let you borrow several books at once for two or three weeks."),
        ("What if I return a book late?", "Some libraries charge a small fine, and many have stopped charging fines for children. Just bring the book back as soon as you can."),
        ("Can I use the computers?", "Yes. Most libraries have computers and free internet that members can use for a set time."),
        ("Does the library have activities for children?", "Many libraries run story times for young children, reading challenges in the holidays and homework clubs."),
        ("Can the library help me find information?", "Yes. Librarians are trained to help people find reliable information on almost any subject."),
        ("Can I ask the library to buy a book?", "Many libraries welcome suggestions. Ask at the desk or fill in a request form."),
    ]),
    ("seeing a doctor", [
        ("When should I make an appointment?", "Make an appointment if a symptom is new, lasts longer than expected, keeps coming back or worries you."),
        ("When is it an emergency?", "Call the emergency number for chest pain, difficulty breathing, heavy bleeding, a sudden severe headache, fainting or signs of a stroke such as a drooping face or weak arm."),
        ("What should I tell the doctor?", "Explain your symptoms, when they started and what makes them better or worse. Mention any medicines you take and any allergies."),
        ("Is what I tell my doctor private?", "Yes. Doctors must keep what patients tell them confidential, except in rare cases where someone is at serious risk."),
        ("Can I bring someone with me?", "Yes. Many people bring a friend or relative for support or to help remember what was said."),
        ("What if I do not understand what the doctor says?", "Ask the doctor to explain again in simpler words. It is your health, and you have a right to understand."),
        ("Can a pharmacist help instead?", "For minor problems such as colds, hay fever or small cuts, a pharmacist can often give advice and tell you if you need to see a doctor."),
    ]),
    ("recycling", [
        ("Why should I recycle?", "Recycling saves energy and raw materials and means less rubbish is buried or burned."),
        ("Do I need to wash things before recycling them?", "A quick rinse helps. Food left in tins and jars can spoil a whole load of recycling."),
        ("Can I recycle pizza boxes?", "Clean parts can usually be recycled, but parts soaked in grease often cannot. Check the rules of your local council."),
        ("What happens to glass bottles?", "They are sorted by colour, crushed, melted and made into new bottles and jars."),
        ("Is recycling the best thing to do?", "It is good, but using less and reusing things is even better. Repairing something saves the energy needed to make a new one."),
        ("Where do batteries go?", "Batteries should not go in the normal bin. Many shops and recycling centres have special collection boxes for them."),
    ]),
    ("fire safety at home", [
        ("How often should I test my smoke alarm?", "Test it once a month by pressing the button, and change the battery when it needs it."),
        ("What should I do if there is a fire?", "Get everyone out, stay out and call the emergency number from outside. Do not go back in for belongings."),
        ("How can I prevent kitchen fires?", "Never leave cooking unattended, keep tea towels away from the cooker and turn pan handles away from the edge."),
        ("What is an escape plan?", "It is a simple plan that everyone in the home knows, with the best way out and a safe place to meet outside."),
        ("Are candles safe?", "Candles can be used safely if they are in a steady holder, away from curtains and never left burning when no one is in the room."),
        ("What if smoke blocks the way out?", "Stay low, where the air is clearer, close doors behind you and find another way out if you can. If you are trapped, call for help and signal from a window."),
    ]),
    ("equality and fair treatment", [
        ("What is discrimination?", "Discrimination is treating someone unfairly because of who they are, such as their race, religion, gender, disability, age or sexual orientation."),
        ("Why is a stereotype harmful?", "A stereotype treats a whole group as if everyone in it were the same. It ignores who people really are and can be used to justify unfair treatment."),
        ("What can I do if I see someone treated unfairly?", "If it is safe, you can speak up, support the person who was targeted and report what happened to someone in charge."),
        ("Is it discrimination if it was only a joke?", "Jokes that mock people for who they are can still hurt and can make a place feel unwelcoming. Intention matters, but so does the effect."),
        ("Are there laws against discrimination?", "Many countries have laws that protect people from discrimination at work, in education, in housing and in services."),
        ("What does equal treatment mean?", "It means everyone has the same rights and is judged on what they do, not on the group they belong to."),
        ("How can schools and workplaces be fairer?", "Clear rules, fair ways of hiring and promoting, training for staff and safe ways to report problems all help."),
    ]),
    ("consent and respect", [
        ("What does consent mean?", "Consent means agreeing to something freely, with full understanding, and without pressure, threats or tricks."),
        ("Can someone change their mind?", "Yes. Consent can be withdrawn at any time, and that choice must be respected."),
        ("Does silence mean yes?", "No. Silence, or not saying no, is not the same as agreeing. If you are unsure, ask, and listen to the answer."),
        ("Can someone who is very drunk give consent?", "No. A person who is very drunk, asleep or unconscious cannot give consent."),
        ("Where does consent matter?", "Everywhere: in medical care, in sharing photos or personal information, in touching, and between adults in intimate relationships."),
        ("Where can young people get confidential advice?", "A school nurse, a family doctor or a sexual health clinic can give confidential advice, and many helplines are free."),
    ]),
    ("healthy relationships", [
        ("What makes a relationship healthy?", "Respect, honesty, trust and the freedom for each person to make their own choices and see their own friends."),
        ("Is jealousy a sign of love?", "A little jealousy is human, but jealousy that leads to checking phones, controlling where someone goes or making threats is a warning sign, not a sign of love."),
        ("Is it all right to read my partner's messages?", "Reading someone's private messages without permission breaks trust. If you are worried about something, it is better to talk honestly."),
        ("What if we keep arguing?", "Try to talk at a calm time, listen to each other and look for solutions together. A counsellor can help couples and families communicate better."),
        ("What should I do if I feel unsafe with a partner?", "Talk to someone you trust and contact a support service or helpline. In an emergency, call the police."),
        ("Do relationship customs differ between cultures?", "Yes. Customs about dating, marriage and family roles vary widely. Respect and safety matter in every culture."),
    ]),
    ("the weather", [
        ("Why does it rain?", "Warm, damp air rises and cools, and the water vapour in it turns into tiny drops that form clouds. When the drops grow heavy, they fall as rain."),
        ("What makes the wind blow?", "The sun heats some places more than others. Warm air rises, and cooler air moves in to take its place. That moving air is wind."),
        ("Why is it colder in winter?", "In winter, your part of the Earth is tilted away from the sun, so sunlight arrives at a lower angle and the days are shorter."),
        ("How do forecasters predict the weather?", "They collect measurements from weather stations, balloons, ships and satellites, and use computer models to work out what is likely to happen next."),
        ("What is fog?", "Fog is a cloud that forms close to the ground when damp air cools down, often on calm, clear nights."),
        ("Why do we see lightning before we hear thunder?", "Light travels much faster than sound, so the flash reaches us first."),
        ("What is a heatwave?", "A heatwave is a period of unusually hot weather lasting several days. It can be dangerous for older people, babies and people who are ill."),
    ]),
    ("space", [
        ("What is a planet?", "A planet is a large round object that travels around a star. The Earth is one of eight planets that travel around the sun."),
        ("Why does the moon change shape?", "The moon does not really change. As it travels around the Earth, we see different amounts of its sunlit side."),
        ("What is a star?", "A star is a huge ball of very hot gas that gives out light and heat. The sun is our nearest star."),
        ("Why can astronauts float in space?", "In orbit, astronauts and their spacecraft are falling around the Earth together, so they feel weightless."),
        ("How far away is the moon?", "The moon is about three hundred and eighty thousand kilometres away. Light from the moon reaches us in just over one second."),
        ("What is a comet?", "A comet is a ball of ice and dust that travels around the sun. When it comes close to the sun, it can grow a long glowing tail."),
    ]),
    ("the human body", [
        ("What does the heart do?", "The heart is a muscle that pumps blood around the body, carrying oxygen and food to every part."),
        ("Why do we need to sleep?", "Sleep lets the body repair itself and helps the brain store memories and clear away waste."),
        ("What do the lungs do?", "The lungs take oxygen from the air we breathe in and get rid of carbon dioxide when we breathe out."),
        ("Why do we sweat?", "Sweat cools the body. As it dries on the skin, it carries heat away."),
        ("What are bones made of?", "Bones are living tissue made mostly of a strong protein and minerals such as calcium."),
        ("Why do we get goosebumps?", "When we are cold or scared, tiny muscles in the skin pull the hairs upright, making small bumps."),
        ("How many teeth does an adult have?", "Most adults have thirty-two teeth, including wisdom teeth, although some people have fewer."),
    ]),
    ("money and banks", [
        ("What is interest?", "Interest is money paid for the use of money. Savers may earn a little interest, and borrowers pay interest on loans."),
        ("What is a budget?", "A budget is a plan for how you will spend and save the money you have."),
        ("How can I spot a scam?", "Be wary of messages that rush you, ask for passwords or promise large rewards. Contact the company on a number you trust before doing anything."),
        ("Why should I save?", "Savings help you cope with surprises, such as a broken boiler or a sudden bill, without borrowing."),
        ("Where can I get help with debt?", "Free and confidential debt advice services can help you make a plan. It is best to ask early."),
        ("What is a credit card?", "A credit card lets you borrow money to pay for things. If you do not pay it back in full each month, you usually pay interest."),
    ]),
    ("feeling low", [
        ("Is it normal to feel sad sometimes?", "Yes. Everyone feels sad or low at times, especially after a loss or a hard day."),
        ("When should I ask for help?", "If low mood lasts for more than a couple of weeks, or makes it hard to sleep, eat, work or enjoy things, it is a good idea to talk to a doctor."),
        ("Who can I talk to?", "A friend, a family member, a teacher, a doctor or a counsellor can all help. Many helplines offer free and confidential support."),
        ("What can I do to help myself?", "Regular sleep, some daily exercise, time outdoors and staying in touch with people can all make a difference."),
        ("What if I have thoughts of hurting myself?", "Please tell someone you trust and contact a crisis line or a doctor straight away. If you are in immediate danger, call the emergency number. You deserve support."),
        ("How can I help a friend who seems low?", "Ask how they are, listen without judging and encourage them to talk to someone who can help, such as a doctor."),
    ]),
    ("leaving extremism behind", [
        ("What is violent extremism?", "It is the use or support of violence to force political or religious views on others."),
        ("Why do some people get drawn in?", "Extremist groups often target people who feel lonely, angry or ignored, and offer them a sense of belonging and simple answers."),
        ("What harm does extremism do?", "It spreads hatred against whole groups, leads to violence that devastates families and divides communities."),
        ("What should I do if I am worried about a friend?", "Talk to them calmly, stay in contact and seek advice from specialist services, teachers or the authorities."),
        ("Can people leave extremist groups?", "Yes. Many people do. Exit programmes offer support, counselling and help to rebuild a life away from violence."),
    ]),
]


def gen_faq(rng):
    title, pairs = rng.choice(FAQ)
    chosen = rng.sample(pairs, rng.randint(2, min(4, len(pairs))))
    lines = []
    if rng.random() < 0.4:
        lines.append(rng.choice(["Common questions about {t}.", "Questions and answers about {t}.",
                                 "Some questions people often ask about {t}."]).format(t=title))
    for q, ans in chosen:
        lines.append("Q: " + q)
        lines.append("A: " + ans)
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Health questions with general, careful answers.
# Fields: question forms, general advice, when to see a doctor, urgent signs
# ---------------------------------------------------------------------------

HEALTH = [
    (["I have had a sore throat for {dur}. What should I do?", "What helps with a sore throat?"],
     ["Most sore throats are caused by viruses and get better on their own within a week.",
      "Warm drinks, rest and sucking on lozenges can ease the pain.",
      "A pharmacist can suggest simple remedies."],
     "See a doctor if it lasts more than a week or keeps coming back.",
     "Get urgent help if you have great difficulty swallowing or breathing."),
    (["I keep getting headaches. What should I do?", "What can I do about a headache?"],
     ["Many headaches are linked to stress, tiredness, too little water or long hours at a screen.",
      "Rest, drinking water and regular meals can help.",
      "A pharmacist can advise on simple pain relief and how often it is safe to take it."],
     "See a doctor if headaches are frequent, getting worse or not helped by simple measures.",
     "Call the emergency number for a sudden, very severe headache, or a headache with a stiff neck, confusion or weakness."),
    (["I have had a cough for {dur}. Should I worry?", "How long does a cough usually last?"],
     ["Coughs after a cold often last two or three weeks.",
      "Rest, warm drinks and honey in warm water can soothe a cough in adults and older children.",
      "Not smoking, and avoiding smoke, helps the lungs recover."],
     "See a doctor if a cough lasts more than three weeks, or if you cough up blood.",
     "Get urgent help if you are very short of breath or have chest pain."),
    (["I burned my hand on the oven. What should I do?", "What is the first thing to do for a small burn?"],
     ["Cool the burn under cool running water for at least twenty minutes.",
      "Remove rings or tight items near the burn before it swells.",
      "Cover it loosely with cling film or a clean plastic bag. Do not use ice, butter or creams."],
     "See a doctor or nurse if the burn is larger than the palm of the hand, is on the face, hands or feet, or blisters badly.",
     "Call the emergency number for large or deep burns, or burns from electricity or chemicals."),
    (["I twisted my ankle. What should I do?", "How should I look after a sprained ankle?"],
     ["Rest the ankle and avoid putting weight on it for a day or two.",
      "An ice pack wrapped in a cloth, for up to twenty minutes at a time, can reduce swelling.",
      "Keep the foot raised on a cushion when you can."],
     "See a doctor if you cannot put any weight on it or the pain and swelling do not improve after a few days.",
     "Get urgent help if the ankle looks misshapen or the foot is cold, pale or numb."),
    (["I feel tired all the time. Why could that be?", "What causes tiredness that will not go away?"],
     ["Tiredness has many possible causes, including poor sleep, stress, low mood, diet and many medical conditions.",
      "Regular sleep, daily activity and balanced meals often help.",
      "It can help to keep a simple diary of sleep, food and energy to show a doctor."],
     "See a doctor if tiredness lasts for several weeks, because a simple blood test can rule out some causes.",
     "Get help quickly if tiredness comes with chest pain, shortness of breath or fainting."),
    (["I have had trouble sleeping for {dur}. What can I do?", "How can I sleep better?"],
     ["Going to bed and getting up at the same time each day helps the body clock.",
      "Avoid caffeine late in the day, and keep screens out of the bedroom.",
      "A calm routine before bed, such as reading or a warm bath, can help."],
     "See a doctor if poor sleep goes on for weeks and affects your daily life.",
     "If worries or low mood are keeping you awake, a doctor or counsellor can help with those too."),
    (["My child has a fever. What should I do?", "What should I do when a child has a high temperature?"],
     ["Give plenty of fluids and let the child rest.",
      "Dress them in light clothing and keep the room comfortably cool.",
      "A pharmacist can advise on medicine suitable for the child's age and weight."],
     "Contact a doctor if the fever lasts more than a few days or the child seems to be getting worse.",
     "Call the emergency number if a child is very drowsy, has difficulty breathing, has a fit, or has a rash that does not fade when pressed."),
    (["I have hay fever. What can help?", "Why do my eyes itch every spring?"],
     ["Hay fever is an allergy to pollen, and it is very common.",
      "Keeping windows closed on high pollen days and showering after being outside can help.",
      "A pharmacist can recommend suitable medicines."],
     "See a doctor if simple remedies do not help or if you also have wheezing.",
     "Get urgent help if you have swelling of the face or trouble breathing after contact with an allergen."),
    (["I have been feeling low for {dur}. Is that normal?", "How do I know if low mood is something more?"],
     ["Everyone has sad days, and low mood often lifts with time, rest and support.",
      "Talking to someone you trust, staying active and keeping a routine can help.",
      "Mental health problems are common and treatable."],
     "If low mood lasts more than two weeks or makes daily life hard, talk to a doctor.",
     "If you have thoughts of harming yourself, contact a crisis line, a doctor or the emergency number straight away."),
    (["I feel very anxious before exams. What can I do?", "How can I handle worry before a big test?"],
     ["Some nerves before an exam are normal and can even help you focus.",
      "Preparing early, sleeping well and practising slow breathing can make a real difference.",
      "Talking to a teacher or school counsellor about your worries can help."],
     "If anxiety stops you from sleeping, eating or going to school, talk to a doctor.",
     "If you ever feel overwhelmed or unsafe, reach out to someone straight away."),
    (["I have a stomach upset. What should I do?", "What helps with sickness and diarrhoea?"],
     ["Most stomach bugs pass within a few days.",
      "Drink small amounts of water often, to replace lost fluids, and rest.",
      "Wash your hands carefully to avoid passing the bug to others."],
     "See a doctor if it lasts more than a few days, or if you cannot keep fluids down.",
     "Get urgent help for signs of serious dehydration, blood in the stool or severe stomach pain."),
    (["Someone told me a herbal tea can cure any illness. Is that true?", "Can a natural remedy replace my medicine?"],
     ["No single remedy cures every illness, and claims like that are a warning sign.",
      "Some herbal products can interfere with prescribed medicines.",
      "Treatments that work are tested in careful studies before they are recommended."],
     "Talk to a doctor or pharmacist before trying any remedy, especially if you already take medicines.",
     "Do not stop a prescribed medicine without medical advice."),
    (["I cut my finger while cooking. What should I do?", "How do I look after a small cut?"],
     ["Press on the cut with a clean cloth until the bleeding stops.",
      "Rinse it under clean running water and pat it dry.",
      "Cover it with a plaster or clean dressing."],
     "See a nurse or doctor if the cut is deep, gaping or shows signs of infection such as redness, heat or pus.",
     "Get urgent help if the bleeding will not stop after ten minutes of firm pressure."),
    (["How much water should I drink?", "How do I know if I am drinking enough?"],
     ["The amount needed depends on your size, activity and the weather.",
      "Pale yellow urine is usually a sign that you are drinking enough.",
      "You need more in hot weather and when you exercise."],
     "Ask a doctor if you feel thirsty all the time, as this can be a sign of a health problem.",
     "Get help quickly if someone is confused, very drowsy or has stopped passing urine."),
]
DURATIONS = ["two days", "three days", "a few days", "a week", "ten days", "two weeks"]


def gen_health(rng):
    qs, advice, see, urgent = rng.choice(HEALTH)
    q = rng.choice(qs).format(dur=rng.choice(DURATIONS))
    body = advice[:1] + sample_in_order(rng, advice[1:], rng.randint(1, 2))
    parts = body + [see]
    if rng.random() < 0.8:
        parts.append(urgent)
    if rng.random() < 0.3:
        parts.append(rng.choice(["Everyone is different, so a doctor or pharmacist is the best person to give advice for you.",
                                 "This is general information, not a diagnosis.",
                                 "If in doubt, it is always fine to ask a health professional."]))
    return "Q: " + q + "\nA: " + " ".join(parts)


# ---------------------------------------------------------------------------
# Local news reports
# ---------------------------------------------------------------------------

NEWS = [
    (["Volunteers in {T} spent {day} morning cleaning up the park by the river.",
      "More than {n} people joined a litter pick in {T} last {day}."],
     ["They filled dozens of bags with rubbish and cleared weeds from the flower beds.",
      "Children from the local school helped to paint the benches.",
      "The council lent gloves, bags and litter pickers.",
      "Afterwards, everyone shared tea and cake in the community hall."],
     ['"It was wonderful to see so many neighbours working together," said {name}, who organised the event.',
      '"The park looks like new," said {name}, a local resident.']),
    (["The library in {T} has reopened after six months of repairs.",
      "{T} library opened its doors again on {day} after a long renovation."],
     ["The building now has a new roof, a lift and a bright children's corner.",
      "There are more computers for public use and a quiet room for study.",
      "A story time for young children will run every {day2} morning.",
      "Membership is free for everyone who lives in the area."],
     ['"A library is the heart of a town," said {name}, the head librarian.',
      '"My children have missed it so much," said {name}, who was first through the door.']),
    (["A new bus route now links {T} with the hospital and the railway station.",
      "Residents of {T} can now take a direct bus to the hospital."],
     ["Buses run every half hour from early morning until late evening.",
      "All the buses have low floors, so they are easy to use with wheelchairs and prams.",
      "Before the change, many older residents had to take two buses or pay for a taxi.",
      "The route was planned after residents signed a petition."],
     ['"This will make a real difference for patients and visitors," said {name}, a local councillor.',
      '"I used to spend an hour getting to my appointments," said {name}, a retired teacher.']),
    (["Pupils at a primary school in {T} have planted {n} trees around their playground.",
      "A tree planting day at a school in {T} has added new green space for children."],
     ["Each class chose a tree and gave it a name.",
      "The trees will give shade in summer and homes for birds and insects.",
      "Parents and grandparents came to help dig the holes.",
      "The pupils will measure the trees each year to see how fast they grow."],
     ['"The children were so proud," said {name}, the head teacher.',
      '"I want to come back and see my tree when I am grown up," said one pupil.']),
    (["Heavy rain caused flooding in parts of {T} on {day}.",
      "Several streets in {T} were flooded after a night of heavy rain."],
     ["Firefighters pumped water out of homes and helped older residents to safety.",
      "The community centre opened as a rest centre with hot drinks and blankets.",
      "Neighbours offered spare rooms to families who could not stay at home.",
      "The council has promised to review the drains in the area."],
     ['"People came out to help straight away," said {name}, whose kitchen was flooded.',
      '"We are grateful to everyone who helped," said {name}, from the fire service.']),
    (["A blood donation session in {T} attracted a record number of donors on {day}.",
      "More people than ever gave blood at the town hall in {T} this week."],
     ["Each donation takes about ten minutes and can help several patients.",
      "Nurses checked each donor's health before they gave blood.",
      "Donors were offered a drink and a biscuit afterwards.",
      "Another session will be held in three months."],
     ['"Giving blood is one of the simplest ways to save a life," said {name}, a nurse at the session.',
      '"I was nervous, but it was quick and easy," said {name}, a first-time donor.']),
    (["Voting went smoothly in {T} in the local council election on {day}.",
      "Polling stations across {T} were busy as residents voted for their local council."],
     ["Polling stations opened at seven in the morning and closed at ten at night.",
      "Election staff helped first-time voters and people with disabilities.",
      "The count took place overnight, watched by observers from every party.",
      "Turnout was higher than at the last local election."],
     ['"It is good to see so many people taking part," said {name}, the returning officer.',
      '"Voting only took five minutes," said {name}, who voted for the first time.']),
    (["A community kitchen in {T} is now serving free hot meals three days a week.",
      "Volunteers in {T} have opened a community kitchen in an old church hall."],
     ["Anyone can come, and no one is asked questions.",
      "The food comes from local shops and farms that would otherwise throw it away.",
      "Volunteers cook, serve and wash up in shifts.",
      "Many guests now help out as volunteers themselves."],
     ['"Sharing a meal brings people together," said {name}, one of the founders.',
      '"It is a warm place to come and talk," said {name}, a regular guest.']),
    (["A new walking group for people living with long-term illness has started in {T}.",
      "People in {T} can now join a free weekly health walk."],
     ["The walks are short, flat and go at a gentle pace.",
      "A trained walk leader goes with every group.",
      "Walkers say the exercise and company lift their mood.",
      "The group meets every {day2} at the park gate."],
     ['"Some people come for the exercise and stay for the friendship," said {name}, the walk leader.',
      '"I feel better after every walk," said {name}, who joined in the spring.']),
    (["People of different faiths in {T} held a shared meal on {day} to welcome new neighbours.",
      "A friendship supper in {T} brought together families from many backgrounds."],
     ["Families brought dishes from their home countries to share.",
      "Children made a banner with the word welcome in many languages.",
      "Local leaders spoke about respect and working together.",
      "The organisers hope to make it a yearly event."],
     ['"We have more in common than we think," said {name}, one of the organisers.',
      '"I have lived here for years, and tonight I met neighbours for the first time," said {name}.']),
    (["A repair cafe in {T} helped fix {n} broken items on {day}.",
      "Residents of {T} brought broken lamps, toasters and bikes to a free repair cafe."],
     ["Volunteers with tools and know-how showed people how to mend their things.",
      "Items that were fixed included radios, kettles, clothes and a child's scooter.",
      "The event kept a large pile of things out of the rubbish tip.",
      "The next repair cafe will be held at the library next month."],
     ['"It is so satisfying to give something a second life," said {name}, a volunteer.',
      '"My grandmother\'s lamp works again," said {name}, smiling.']),
    (["Young people in {T} have raised money for the local hospice with a sponsored run.",
      "A sponsored run organised by teenagers in {T} raised money for charity."],
     ["More than {n} runners took part, some of them in fancy dress.",
      "Local shops donated water and fruit for the runners.",
      "The money will help pay for care for people with serious illnesses and support for their families.",
      "The organisers thanked everyone who cheered along the route."],
     ['"We wanted to give something back," said {name}, one of the organisers.',
      '"The nurses looked after my grandad so well," said {name}, who ran the whole course.']),
]


def gen_news(rng):
    leads, facts, quotes = rng.choice(NEWS)
    name, _ = person(rng)
    d = {"T": town_name(rng), "day": rng.choice(DAYS), "day2": rng.choice(DAYS),
         "n": rng.choice(["twenty", "thirty", "fifty", "sixty", "a hundred"]),
         "name": name + " " + rng.choice(SURNAMES)}
    sents = [rng.choice(leads)] + sample_in_order(rng, facts, rng.randint(2, 4))
    q = rng.choice(quotes)
    sents.insert(rng.randint(2, len(sents)), q)
    return " ".join(s.format(**d) for s in sents)


SURNAMES = ["Smith", "Patel", "Okafor", "Garcia", "Chen", "Nowak", "Jones", "Khan", "Silva", "Murphy",
            "Ahmed", "Rossi", "Kim", "Brown", "Mensah", "Novak", "Lopez", "Walker", "Haddad", "Evans",
            "Ito", "Costa", "Hughes", "Osei", "Petrov", "Ward", "Ali", "Fischer", "Moreau", "Reid"]


# ---------------------------------------------------------------------------
# Corpus assembly
# ---------------------------------------------------------------------------

# (generator, relative weight)
GENERATORS = [
    (gen_story, 22), (gen_diary, 7), (gen_letter, 6),
    (gen_animal, 7), (gen_animal_qa, 3),
    (gen_job, 6), (gen_job_qa, 3),
    (gen_institution, 6), (gen_town, 5), (gen_season, 2), (gen_object, 3),
    (gen_advice, 7), (gen_howto, 4), (gen_recipe, 2),
    (gen_faq, 6), (gen_health, 3), (gen_news, 5),
]


def read_passages(path):
    """Hand-written passages: separated by blank lines, '# ' lines are comments."""
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    docs, cur = [], []
    for line in lines:
        if line.startswith("# ") or line == "#":
            continue
        if line.strip() == "":
            if cur:
                docs.append("\n".join(cur))
                cur = []
        else:
            cur.append(line.rstrip())
    if cur:
        docs.append("\n".join(cur))
    return docs


def check_doc(doc):
    assert doc == doc.strip(), doc
    assert "\n\n" not in doc, doc
    assert "{" not in doc and "}" not in doc, doc
    assert all(32 <= ord(c) < 127 or c == "\n" for c in doc), doc
    assert "  " not in doc, doc


def build():
    rng = random.Random(SEED)
    passages = read_passages(PASSAGES_FILE)
    docs, seen = [], set()
    for p in passages:
        check_doc(p)
        if p not in seen:
            seen.add(p)
            docs.append(p)
    total = sum(len(d) + 2 for d in docs)
    funcs = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    misses = 0
    while total < TARGET_TOTAL_BYTES:
        gen = rng.choices(funcs, weights)[0]
        doc = gen(rng)
        check_doc(doc)
        if doc in seen:
            misses += 1
            if misses > 100000:
                raise RuntimeError("generator keeps repeating itself")
            continue
        seen.add(doc)
        docs.append(doc)
        total += len(doc) + 2

    split_rng = random.Random(SEED + 1)
    order = list(range(len(docs)))
    split_rng.shuffle(order)
    n_held = round(len(docs) * HELDOUT_FRACTION)
    held_idx = set(order[:n_held])
    heldout = [docs[i] for i in order[:n_held]]
    train = [docs[i] for i in order[n_held:]]
    assert not held_idx.intersection(order[n_held:])
    n_hand = len(passages)
    stats = {
        "documents": len(docs),
        "hand_written": n_hand,
        "generated": len(docs) - n_hand,
        "heldout_hand_written": sum(1 for i in held_idx if i < n_hand),
        "duplicates_skipped": misses,
    }
    return train, heldout, stats


def write(path, docs):
    data = "\n\n".join(docs) + "\n"
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(data)
    return len(data.encode("ascii"))


def main():
    train, heldout, stats = build()
    train_bytes = write(TRAIN_FILE, train)
    held_bytes = write(HELDOUT_FILE, heldout)
    print("hand-written passages: %d, generated documents: %d, duplicates skipped: %d"
          % (stats["hand_written"], stats["generated"], stats["duplicates_skipped"]))
    print("train.txt:   %9d bytes, %5d documents" % (train_bytes, len(train)))
    print("heldout.txt: %9d bytes, %5d documents (%d hand-written)"
          % (held_bytes, len(heldout), stats["heldout_hand_written"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
