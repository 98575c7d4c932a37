"""Realistic response texts that the library's test cases are assembled from.

The English paragraphs are kept plain on purpose, so each constraint's cases add exactly the
feature they test and nothing else: every sentence starts with a capital letter and ends with a
period, and there are no digits, exclamation or question marks, quotes, markdown characters,
all-caps words, abbreviations or non-ASCII characters. Nor do they contain any word of
KEYWORDS, any phrase of PHRASES, or the letters of LETTER_SENTENCES more than the cases expect.
"""

from __future__ import annotations

import random
import re

PARAGRAPHS = (
    "Good sleep starts with a steady routine. Try to go to bed and wake up at the same time every day, "
    "even on days off. Keep your bedroom dark and cool, and put your phone away an hour before bed. "
    "If you cannot fall asleep, get up for a while and read something calm.",
    "Most houseplants need less water than people think. Check the soil with your finger before you pour, "
    "and water only when the top layer feels dry. Make sure the pot has a hole in the bottom so extra water "
    "can drain away. Plants that sit in wet soil for a long time often rot at the roots.",
    "Learning a new language takes patience more than talent. Spend a little time on it every day instead of "
    "one long session each month. Listen to podcasts, label things around your home and speak out loud as "
    "often as you can. Mistakes are part of the process, so do not let them slow you down.",
    "Saving money becomes easier once you track where it goes. Write down every purchase for a month and "
    "look for patterns at the end. Small habits such as buying lunch every day add up faster than most "
    "people expect. Set aside a fixed amount right after you get paid, before you spend anything else.",
    "A good morning routine can shape the rest of your day. Drink a glass of water, open the curtains and "
    "stretch for a few minutes. Plan the three most important tasks before you check your messages. "
    "Keeping the routine short makes it much easier to stick with.",
    "Baking bread at home is simpler than it looks. You only need flour, water, salt and yeast to make a "
    "basic loaf. Knead the dough until it feels smooth, then let it rise in a warm place until it doubles "
    "in size. Bake it in a hot oven until the crust turns golden brown.",
    "If you are new to running, start slowly. Alternate between walking and running for short stretches, "
    "and add a little more running each week. Good shoes matter more than fancy clothes. Rest days are "
    "important because your body gets stronger while it recovers.",
    "Working from home works best with clear boundaries. Set up a separate corner for work, even if it is "
    "small. Start and finish at the same hours each day and take real breaks away from the screen. At the "
    "end of the day, close the laptop and put it out of sight.",
    "Reading more is mostly a matter of making room for it. Carry a book with you and read during short "
    "waits, on the bus or before bed. Choose books you actually enjoy rather than the ones you feel you "
    "should read. Ten quiet minutes each evening add up to many books over a year.",
    "To clean a laptop keyboard, turn the computer off first. Hold it at an angle and gently tap it to "
    "shake out crumbs. Wipe the keys with a soft cloth that is slightly damp, never wet. Let everything dry "
    "completely before you turn it back on.",
    "Planning a trip goes more smoothly when you decide on a budget first. Pick the dates, then compare a "
    "few options for travel and places to stay. Leave some free time in the plan for rest and surprises. "
    "Keep copies of your documents in a separate bag.",
    "A good cup of tea depends on the water and the timing. Use fresh water and let it cool slightly for "
    "green tea, since boiling water makes it bitter. Black tea can steep for three to five minutes. Taste "
    "it and adjust the time until you find what you like.",
    "Composting turns kitchen scraps into rich soil for the garden bed. Mix green material such as vegetable "
    "peels with brown material such as dry leaves or paper. Turn the pile now and then so air can reach the "
    "middle. In a few months the scraps break down into dark, crumbly compost.",
    "Managing your time starts with knowing what matters most. Write a short list of tasks each morning and "
    "put the hardest one at the top. Work on one thing at a time and silence notifications while you focus. "
    "At the end of the day, review what you finished and plan the next one.",
    "Cooking rice well is mostly about the ratio of water to grain. Rinse the rice until the water runs "
    "clear, then add it to the pot with the right amount of water. Bring it to a boil, cover it and turn "
    "the heat down low. Let it rest for a few minutes before you fluff it with a fork.",
    "Speaking in front of a group gets easier with practice. Prepare the main points well, but do not try "
    "to memorize every word. Practice out loud a few times, ideally in front of a friend. Slow down, breathe "
    "and look at the people in the room while you talk.",
    "When you start learning the guitar, short daily practice beats long weekly sessions. Begin with a few "
    "simple chords and switch between them slowly. Your fingertips will hurt at first, but they toughen up "
    "after a couple of weeks. Play songs you like so that practice stays fun.",
    "Choosing a bike depends on where you plan to ride. A road bike is light and fast on smooth streets, "
    "while a mountain bike handles rough trails. For daily errands, a simple city bike with a basket is "
    "often the best choice. Always test ride a bike before you buy it.",
    "Cats are happier with a predictable daily rhythm. Feed them at the same times and keep the litter box "
    "clean and in a quiet spot. Give them places to climb and hide, and play with them every day. Regular "
    "checkups help catch health problems early.",
    "A clear email gets a faster reply. Put the main request in the first two sentences and keep the rest "
    "short. Use a subject line that tells the reader what the message is about. Read it once more before "
    "you send it, and check that the names are spelled correctly.",
)

# Other languages, for the response-language constraint (ISO 639-1 codes as langdetect returns them).
LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian", "pt": "Portuguese"}
FOREIGN_PARAGRAPHS = {
    "fr": (
        "Pour bien dormir, il faut garder des horaires réguliers. Couchez-vous et levez-vous à la même heure "
        "chaque jour, même le week-end. Gardez la chambre sombre et fraîche, et rangez votre téléphone une "
        "heure avant de dormir.",
        "Apprendre une langue demande surtout de la patience. Pratiquez un peu tous les jours plutôt qu'une "
        "longue séance par mois. Écoutez des émissions, parlez à voix haute et n'ayez pas peur de faire des "
        "erreurs.",
    ),
    "es": (
        "Para dormir bien, conviene mantener una rutina estable. Acuéstate y levántate a la misma hora todos "
        "los días, incluso los fines de semana. Mantén la habitación oscura y fresca, y deja el teléfono una "
        "hora antes de dormir.",
        "Aprender un idioma nuevo requiere más paciencia que talento. Practica un poco cada día en lugar de "
        "hacer una sesión larga al mes. Escucha programas, habla en voz alta y no tengas miedo de equivocarte.",
    ),
    "de": (
        "Für guten Schlaf ist ein fester Rhythmus wichtig. Gehen Sie jeden Tag zur gleichen Zeit ins Bett und "
        "stehen Sie zur gleichen Zeit auf, auch am Wochenende. Halten Sie das Schlafzimmer dunkel und kühl und "
        "legen Sie das Handy eine Stunde vorher weg.",
        "Eine neue Sprache zu lernen braucht vor allem Geduld. Üben Sie jeden Tag ein wenig, statt einmal im "
        "Monat lange zu lernen. Hören Sie Sendungen, sprechen Sie laut und haben Sie keine Angst vor Fehlern.",
    ),
    "it": (
        "Per dormire bene bisogna mantenere orari regolari. Vai a letto e alzati alla stessa ora ogni giorno, "
        "anche nel fine settimana. Tieni la camera buia e fresca e metti via il telefono un'ora prima di "
        "dormire.",
        "Imparare una nuova lingua richiede soprattutto pazienza. Esercitati un po' ogni giorno invece di fare "
        "una lunga sessione al mese. Ascolta programmi, parla ad alta voce e non avere paura di sbagliare.",
    ),
    "pt": (
        "Para dormir bem, é importante manter uma rotina regular. Deite-se e levante-se à mesma hora todos os "
        "dias, mesmo nos fins de semana. Mantenha o quarto escuro e fresco e guarde o telemóvel uma hora antes "
        "de dormir.",
        "Aprender uma nova língua exige sobretudo paciência. Pratique um pouco todos os dias em vez de fazer "
        "uma sessão longa por mês. Ouça programas, fale em voz alta e não tenha medo de errar.",
    ),
}

# Words that appear nowhere in PARAGRAPHS, each with sentences that use it exactly once.
KEYWORDS = {
    "weekend": (
        "Plan something relaxing for the weekend.",
        "A free weekend is a good time to start.",
        "Many people catch up on chores over the weekend.",
        "The weekend gives you time to rest properly.",
        "Set aside one hour this weekend to get started.",
        "Try it during a calm weekend first.",
    ),
    "coffee": (
        "Skip the coffee after lunch.",
        "A cup of coffee in the morning is fine for most people.",
        "Too much coffee can make you restless.",
        "Swap your second coffee for a glass of water.",
        "Coffee tastes better when the beans are fresh.",
        "Enjoy your coffee slowly instead of rushing.",
    ),
    "music": (
        "Quiet music can help you focus.",
        "Some people like music in the background while they work.",
        "Choose music without lyrics for deep work.",
        "Music makes repetitive tasks feel shorter.",
        "Turn the music off when you need to concentrate.",
        "A favorite piece of music can lift your mood.",
    ),
    "window": (
        "Open a window to let in fresh air.",
        "A desk near a window gives you natural light.",
        "Keep the window closed on very cold nights.",
        "Sunlight through the window helps you wake up.",
        "Put the plant close to a bright window.",
        "Clean the window glass with a soft cloth.",
    ),
    "battery": (
        "Charge the battery before you leave.",
        "A weak battery can shut the device down suddenly.",
        "Carry a spare battery on long days.",
        "Check the battery level every evening.",
        "The battery lasts longer when the screen is dimmer.",
        "Replace the battery when it stops holding a charge.",
    ),
    "library": (
        "The local library has many free resources.",
        "Borrowing from the library saves a lot of money.",
        "Visit the library on a quiet afternoon.",
        "Ask the library staff for recommendations.",
        "A library card costs nothing in most towns.",
        "Study at the library when home is too noisy.",
    ),
    "ocean": (
        "A walk by the ocean clears the mind.",
        "The ocean air feels cool in the evening.",
        "Many people find the sound of the ocean relaxing.",
        "Swim in the ocean only where it is safe.",
        "Photos of the ocean make a calm wallpaper.",
        "The ocean looks different every single day.",
    ),
    "recipe": (
        "Follow the recipe closely the first time.",
        "A simple recipe is best for beginners.",
        "Write down any changes you make to a recipe.",
        "Share the recipe with a friend afterward.",
        "Read the whole recipe before you begin.",
        "Every recipe gets easier the second time.",
    ),
}

# Phrases that appear nowhere in PARAGRAPHS, each with sentences that use it exactly once.
PHRASES = {
    "step by step": (
        "Work through the plan step by step.",
        "Step by step, the task gets easier.",
        "Build the habit step by step.",
        "It helps to learn the basics step by step.",
        "Fix one problem at a time, step by step.",
        "Move step by step and check your progress.",
    ),
    "little by little": (
        "Little by little, the results show up.",
        "Improve your skills little by little.",
        "Add new foods to your diet little by little.",
        "The pile shrinks little by little.",
        "Confidence grows little by little.",
        "Raise the difficulty little by little.",
    ),
    "in the long run": (
        "Small savings matter in the long run.",
        "In the long run, consistency wins.",
        "Good habits pay off in the long run.",
        "Rest makes you faster in the long run.",
        "Quality tools save money in the long run.",
        "In the long run, patience is rewarded.",
    ),
    "keep it simple": (
        "Try to keep it simple at first.",
        "When in doubt, keep it simple.",
        "A good rule is to keep it simple.",
        "Keep it simple and focus on the basics.",
        "Experts often say to keep it simple.",
        "You can keep it simple and still do well.",
    ),
}

# Sentences each holding the letter exactly once (case-insensitively).
LETTER_SENTENCES = {
    "z": (
        "The zoo opens early in the morning.",
        "The maze was fun for the children.",
        "Keep the freezer well organised.",
        "Lazy mornings are nice once in a while.",
        "Size matters less than comfort here.",
        "A prize is waiting for the winner.",
        "The wind was cold and hazy today.",
    ),
    "j": (
        "A short jog helps you wake up.",
        "Pack a jacket in case it rains.",
        "Enjoy the small wins.",
        "Keep a journal by your bed.",
        "Put the jam back in the fridge.",
        "The job went well overall.",
        "Take a jar of water with you.",
    ),
    "x": (
        "Try to relax for a moment.",
        "The box was heavier than it looked.",
        "Wait for the next bus.",
        "Fix the loose handle first.",
        "Six people came to the meeting.",
        "Mix the flour and salt.",
        "Add one extra chair.",
    ),
    "q": (
        "The quiet room helped us focus.",
        "Ask a question when you are unsure.",
        "The queue moved slowly at noon.",
        "Quality matters more than speed.",
        "The quilt kept everyone warm.",
        "Be quick but careful.",
        "Liquid soap works well here.",
    ),
}

QUESTIONS = (
    "Have you tried something like this before?",
    "What matters most to you here?",
    "Which option sounds best for you?",
    "Could a friend help you get started?",
    "How much time can you set aside each week?",
    "Would a reminder on your phone help?",
)

CAPS_SENTENCES = (
    "Please do NOT skip this part.",
    "Always check the label FIRST.",
    "This is the MOST useful tip.",
    "Keep the lid CLOSED while it cooks.",
    "Wait until it is COMPLETELY dry.",
    "Save at LEAST a little each week.",
    "It is NEVER too late to start.",
)

LONG_WORDS = (
    "unfortunately",
    "understanding",
    "straightforward",
    "responsibilities",
    "recommendations",
    "extraordinary",
    "organizational",
)

# Short closing sentences of every length from 4 to 12, to end a text at an exact character count.
_CLOSING_OF_LENGTH = {
    len(c): c
    for c in (
        "Yes.",
        "Done.",
        "Relax.",
        "Try it.",
        "Go slow.",
        "Have fun.",
        "Good luck.",
        "Keep going.",
        "Start today.",
    )
}

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def sentences_of(text: str) -> list[str]:
    return [s for s in _SENTENCE_SPLIT.split(text.strip()) if s]


SENTENCES = tuple(s for p in PARAGRAPHS for s in sentences_of(p))


def paragraphs(rng: random.Random, k: int, where=None) -> list[str]:
    """k distinct paragraphs, optionally only those `where(paragraph)` accepts."""
    pool = [p for p in PARAGRAPHS if where is None or where(p)]
    return rng.sample(pool, k)


def prose(rng: random.Random, where=None) -> str:
    return paragraphs(rng, 1, where)[0]


def sentences(rng: random.Random, k: int, where=None) -> list[str]:
    pool = [s for s in SENTENCES if where is None or where(s)]
    return rng.sample(pool, k)


def with_sentences(base: str, extra: list[str], rng: random.Random) -> str:
    """base with the extra sentences inserted at random sentence boundaries."""
    parts = sentences_of(base)
    for sentence in extra:
        parts.insert(rng.randrange(len(parts) + 1), sentence)
    return " ".join(parts)


def prose_with(rng: random.Random, pool, k: int, where=None) -> str:
    """A paragraph with k sentences drawn from pool inserted at random sentence boundaries."""
    return with_sentences(prose(rng, where), rng.sample(pool, k), rng)


def word_stream(rng: random.Random) -> list[str]:
    """All paragraphs in a random order, as whitespace-separated words."""
    order = list(PARAGRAPHS)
    rng.shuffle(order)
    return " ".join(order).split()


def text_of_words(rng: random.Random, n: int) -> str:
    """Prose of exactly n whitespace-separated words, cut at a word and closed with a period."""
    words = word_stream(rng)
    while len(words) < n:
        words += word_stream(rng)
    text = " ".join(words[:n])
    return text.rstrip(".,") + "."


def text_of_sentences(rng: random.Random, k: int) -> str:
    return " ".join(sentences(rng, k))


def text_of_length(rng: random.Random, n: int) -> str:
    """Prose of exactly n characters (n >= 20): words from the paragraphs, then a short closing sentence."""
    shortest, longest = min(_CLOSING_OF_LENGTH), max(_CLOSING_OF_LENGTH)
    text = ""
    for word in word_stream(rng):
        candidate = f"{text} {word}" if text else word
        room = n - len(candidate.rstrip(".,")) - 2  # ". " then the closing sentence
        if room < shortest:
            continue  # this word leaves no room for a closing sentence: try a shorter one
        text = candidate
        if room <= longest:
            break
    text = text.rstrip(".,")
    return f"{text}. {_CLOSING_OF_LENGTH[n - len(text) - 2]}"
