"""Which language a customer writes in (Italian or English, the two the inbox speaks), and a small
English → Italian glossary of business words so that an English question can still match an
Italian knowledge base word for word where the embedder alone is unsure."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-zàèéìíòóùú']+", re.IGNORECASE)
_IT = set("""il lo la gli le un una di da in con su per che non è sono ho hai ha avete siete sei del della dei
delle al alla nel nella quanto quanta quanti quante costa costano come dove quando posso vorrei grazie ciao buongiorno
buonasera salve anche ma perché cosa chi mi ti ci vi si io voi noi vostro vostra aprite chiudete fate c'è qual
quale sì no""".split())
_EN = set("""the a an of to in on at for with and or is are was be do does did can could would will you your we our
us i me my it this that what which who when where how much many there any have has from by about please thanks thank
hi hello hey yes no open close cost price""".split())

# English business words → Italian stems a knowledge base is likely to use
GLOSSARY: dict[str, tuple[str, ...]] = {
    "price": ("prezzo", "costo", "costa"), "prices": ("prezzi",), "cost": ("costo", "costa", "prezzo"),
    "costs": ("costano", "prezzi"), "much": ("prezzo", "costa"), "cheap": ("economico",), "euro": ("euro",),
    "open": ("aperto", "apertura", "aprite", "orari"), "opening": ("apertura", "orari"), "hours": ("orari", "ore"),
    "close": ("chiuso", "chiusura"), "closed": ("chiuso", "chiusura"), "holiday": ("ferie", "festivi", "chiuso"),
    "holidays": ("ferie", "festivi"), "monday": ("lunedì",), "tuesday": ("martedì",), "wednesday": ("mercoledì",),
    "thursday": ("giovedì",), "friday": ("venerdì",), "saturday": ("sabato",), "sunday": ("domenica",),
    "address": ("indirizzo", "via", "sede"), "where": ("dove", "sede", "indirizzo"), "shop": ("negozio",),
    "store": ("negozio",), "parking": ("parcheggio",), "park": ("parcheggio", "parcheggiare"),
    "phone": ("telefono",), "number": ("numero",), "email": ("email",), "whatsapp": ("whatsapp",),
    "shipping": ("spedizione", "spedizioni"), "ship": ("spedizione", "spedite"), "delivery": ("consegna",),
    "free": ("gratuita", "gratuito", "gratis"), "order": ("ordine",), "minimum": ("minimo", "sopra"),
    "return": ("reso", "resi", "restituire"), "returns": ("resi", "reso"), "refund": ("rimborso", "rimborsi"),
    "exchange": ("cambio",), "damaged": ("danneggiato", "rovinato"), "broken": ("rotto", "rotte"),
    "warranty": ("garanzia",), "guarantee": ("garanzia",), "repair": ("riparazione", "riparazioni", "ripariamo"),
    "payment": ("pagamento", "pagare"), "pay": ("pagare", "pagamento"), "card": ("carta",), "cash": ("contanti",),
    "instalments": ("rate",), "installments": ("rate",), "discount": ("sconto",), "student": ("studenti",),
    "students": ("studenti",), "gift": ("regalo",), "appointment": ("appuntamento",), "book": ("prenotare", "prenotazione"),
    "booking": ("prenotazione",), "exam": ("esame",), "eye": ("vista", "occhi"), "test": ("esame", "controllo"),
    "glasses": ("occhiali",), "lens": ("lente", "lenti"), "lenses": ("lenti",), "contact": ("contatto",),
    "frame": ("montatura",), "frames": ("montature",), "sunglasses": ("sole",), "progressive": ("progressive",),
    "single": ("monofocali",), "vision": ("monofocali", "vista"), "children": ("bambini",), "child": ("bambino",),
    "kids": ("bambini",), "prescription": ("prescrizione",), "days": ("giorni",), "months": ("mesi",),
    "weeks": ("settimane",), "long": ("durata", "tempo"), "time": ("tempo", "ore"), "used": ("adattamento",),
    "blue": ("blu",), "light": ("luce",), "photochromic": ("fotocromatiche",),
}


# Italian words a customer and a business use for the same thing (a question says "reso", the
# policy says "restituire"): a question's words are widened with their group before matching.
_SYNONYM_GROUPS = (
    "reso resi rendere restituire restituzione restituito",
    "gratis gratuito gratuita gratuiti gratuite omaggio",
    "rotto rotta rotti rotte rottura danneggiato danneggiata danneggiati rovinato rovinata",
    "soldi denaro rimborso rimborsare rimborsate rimborsiamo ridare ridate",
    "macchina auto automobile",
    "telefono telefonare chiamare",
    "indirizzo sede via",
    "prezzo costo costa costano tariffa cifra importo",
    "dura durata",
    "aperto aperti aperta aprite apertura",
    "chiuso chiusi chiusa chiudete chiusura",
)
SYNONYMS: dict[str, tuple[str, ...]] = {
    word: tuple(group.split()) for group in _SYNONYM_GROUPS for word in group.split()}


def detect(text: str, default: str = "it") -> str:
    """'it' or 'en' by which language's common words the text uses more."""
    words = [w.lower() for w in _WORD.findall(text)]
    it = sum(w in _IT for w in words) + sum(1 for w in words if w.endswith(("zione", "mente", "ità")))
    en = sum(w in _EN for w in words) + sum(1 for w in words if w.endswith(("ing", "tion", "'s")))
    if it == en:
        return default
    return "it" if it > en else "en"


def italian_equivalents(text: str) -> list[str]:
    """Italian words for the English business words in ``text``, and the synonyms of its Italian
    ones (empty for text with neither)."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        for italian in GLOSSARY.get(word, (word,)):
            out.extend(SYNONYMS.get(italian, ()))
        out.extend(GLOSSARY.get(word, ()))
    return list(dict.fromkeys(out))
