"""Compiled cue patterns for the report parser: sections, sides, scopes, sizes and counts.

Kept apart from :mod:`blogrr_nnu.reports.parser` so the lists can be read (and extended) in one
place. All patterns are case-insensitive; the one-letter side abbreviations ``L``/``R`` are matched
upper-case only (``(?-i:...)``) so that ordinary words are never taken for a side.

Scope model (ConText-like, Harkema et al. 2009): a *forward* cue covers the text after it up to the
next terminator or the end of the sentence; a *backward* cue covers the text from the start of its
clause up to the cue. A terminator right at the start of a forward scope does not end it ("without
*involvement* of the left lobe" keeps the left lobe in scope).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_F = re.IGNORECASE | re.VERBOSE

# ---------------------------------------------------------------- sections and sentences
# Section headers at the start of a line. History-like sections are skipped: what the referrer
# suspected is not what the scan showed.
SECTION_HEADER = re.compile(r"""
    ^[ \t]*[-*\u2022]?[ \t]*
    (?P<name>
        clinical\s+(?:history|details|information|indications?|notes|question)
      | (?:brief\s+)?history | indications? | reason\s+for\s+(?:exam(?:ination)?|study|referral|request)
      | technique | protocol | sequences | comparison | prior\s+studies
      | findings | impressions? | conclusions? | opinion | summary | comments? | report | diagnosis
    )
    [ \t]*(?::|-|$)
""", _F | re.MULTILINE)
SKIPPED_SECTIONS = re.compile(
    r"clinical|history|indication|reason|technique|protocol|sequences|comparison|prior", re.IGNORECASE)

# Abbreviations whose full stop does not end a sentence.
ABBREVIATIONS = re.compile(r"(?:\b(?:approx|e\.g|i\.e|vs|cf|dr|fig|ca|max|min|est|incl|resp)\.|\b[A-Z]\.)$", re.IGNORECASE)

# ---------------------------------------------------------------- sides
SIDE = re.compile(r"""
    (?P<bilateral>
        \bbilateral(?:ly)?\b | \bboth\b | \bbi-?hemispheric\b
      | \b(?:left|right)\s*(?:and|&|/)\s*(?:left|right)\b
      | \b(?:left|right|(?-i:L|R))\s*(?:>|<|greater\s+than|more\s+than|larger\s+than)\s*(?:left|right|(?-i:L|R))\b
    )
  | (?P<contralateral>\bcontra-?lateral\b | \bopposite\b)
  | (?P<ipsilateral>\bipsi-?lateral\b)
  | (?P<midline>\bmidline\b)
  | (?P<left>\bleft\b | (?-i:\b(?:Lt|lt)\b\.?) | (?-i:\bL\b)(?![.']\w))
  | (?P<right>\bright\b | (?-i:\b(?:Rt|rt)\b\.?) | (?-i:\bR\b)(?![.']\w))
""", _F)

# Words that may sit between a side word and its site, or between the items of a site list
# ("right posterior frontal, temporal and insular lobes").
FILLER_GAP = re.compile(r"""
    ^(?:
        [\s,\-/()&]
      | \b(?:and|or|the|both|of|as\s+well\s+as|aspects?|portions?|parts?|sided?|regions?|areas?|territory
          |lobes?|gyr(?:us|i)|cortex|cortices|cortical|subcortical|juxtacortical|white|matter|gr[ae]y
          |deep|anterior|posterior|medial|mesial|lateral|superior|inferior|mid|middle|high|upper|lower
          |basal|dorsal|ventral|parasagittal|paramedian|convexity|cerebral|nucle(?:us|i)|head|tail|pole
          |predominantly|mainly|mostly|primarily|entire|whole|superficial|anteriorly|posteriorly
          |inferiorly|superiorly|extensively|adjacent|sided)\b
    )*$
""", _F)

# A side stated after the site (or after a list of sites).
POST_SIDE = re.compile(r"""  # used with .match(text, pos): no "^" (it would only match at 0)
    # "... regions of the right", "frontal mass on the left"
    (?:\s+(?:lobes?|regions?|areas?|portions?|parts?|aspects?|territor(?:y|ies)|zones?|lesions?|mass(?:es)?
         |tumou?rs?))?
    (?:
        ,?\s*on\s+the\s+(?P<on>left|right)(?:\s+side)?\b
      | ,?\s*in\s+the\s+(?P<mid>midline)\b
      | \s*\(\s*(?P<paren>left|right|(?-i:L|R)|bilateral)\s*\)
      | ,?\s*(?P<bil>bilaterally|on\s+both\s+sides|in\s+both\s+hemispheres)\b
      | \s+of\s+the\s+(?:(?:entire|whole)\s+)?(?P<of>left|right|(?-i:L|R|Lt|Rt|lt|rt))\b
      | \s*,\s*(?P<comma>left|right)(?:\s+side(?:d)?)?\s*(?=[,.;)]|$)
    )
""", _F)

# Plural head nouns: "the frontal lobes" with no side means both sides.
PLURAL = re.compile(r"""\b(?:lobes|gyri|thalami|hippocampi|hemispheres|amygdalae|horns|ventricles|putamina
                        |insulae|cunei|peduncles|caudate\s+nuclei|lentiform\s+nuclei|temporal\s+poles)\b""", _F)

# ---------------------------------------------------------------- scope cues
NEGATION_FORWARD = re.compile(r"""
    \bno\s+(?:evidence|signs?|suggestion|features?|convincing\s+evidence)\s+of\b
  | \bnegative\s+for\b | \bfree\s+of\b | \babsence\s+of\b | \bnon-?involvement\s+of\b
  | \bwithout\b | \bno\b | \bnot\b | \bneither\b | \bnor\b | \bnever\b | \brather\s+than\b
  | \bspar(?:ing|es)\b(?:\s+of\b)?
""", _F)

NEGATION_BACKWARD = re.compile(r"""
    \b(?:is|are|was|were|remains?)\s+(?:not\s+(?:involved|affected|seen|identified|present|visible)
                                      |spared|uninvolved|unaffected|free)\b
  | \bnot\s+(?:involved|affected)\b
  # "the right temporal lobe shows no abnormal signal": the object is an abnormality, not a lesion property
  # ("the right frontal lesion shows no enhancement" keeps its site: no backward scope for properties)
  | \b(?:shows?|showing|demonstrates?|has|displays?|exhibits?|reveals?|contains?)\s+no\s+
      (?:(?:abnormal|focal|definite|significant|new|suspicious|other|obvious)\s+)*
      (?:signal(?:\s+(?:abnormalit(?:y|ies)|changes?))?|abnormalit(?:y|ies)|lesions?|mass(?:es)?|tumou?rs?
        |pathology|changes?)\b
""", _F)

# Properties of a lesion: negating one ("no enhancement") says nothing about where the lesion is.
PROPERTY = re.compile(r"""\s*(?:(?:other|new|definite|significant|abnormal|associated|appreciable|convincing|
    further|avid|solid|intralesional|intratumou?ral|internal|central|\w+ly)\s+){0,2}
    (?:enhanc\w* | restrict\w* | (?:reduced\s+|restricted\s+)?diffusion | (?:haem|hem)orrhag\w* | blood\w*
     | calcif\w* | necros\w* | necrotic | cyst\w* | susceptibility | blooming | perfusion | rcbv | flow
     | (?:o)?edema | oedema | mass\s+effect | components? | hyperperfusion | elevated\s+rcbv)""", _F)

# Nouns that make "<site> <noun>" a reference to a known lesion ("the left frontal lesion").
LESION_NOUN = re.compile(r"""[\s-]*(?:lobe\s+|gyrus\s+|cortical\s+|white\s+matter\s+)?
    (?:lesions?|mass(?:es)?|tumou?rs?|nodules?|foci|focus|components?|glioma|metastas[ie]s|cavity|deposits?)\b""", _F)

NORMAL_FORWARD = re.compile(r"""
    \b(?:normal|unremarkable)\b(?:[- ]appearing)?
    (?:\s+(?:appearances?|signal|size|morphology|calibre|caliber)\s+(?:of|in|within)\b)?
""", _F)

NORMAL_BACKWARD = re.compile(r"""
    \b(?:is|are|appears?|remains?|looks?|seems?)\s+(?:otherwise\s+|also\s+|entirely\s+|essentially\s+|again\s+)?
      (?:symmetric(?:al)?\s+and\s+)?
      (?:normal|unremarkable|preserved|intact|within\s+normal\s+limits|of\s+normal\s+\w+|symmetric(?:al)?|clear)\b
  | \b(?:normal|unremarkable)\s+(?:in\s+)?(?:size|calibre|caliber|appearances?|signal|volume|morphology|configuration|position)\b
  | \b(?:normal|unremarkable|intact|preserved)\b(?=\s*(?:[.;]|$))
  | :\s*(?:normal|unremarkable|no\s+abnormality(?:\s+detected)?|nad|nil|clear|negative|none)\b
  | ,\s*(?:(?:most\s+)?likely\s+|probably\s+)?an?\s+(?:normal|physiological|physiologic)\s+(?:finding|variant)\b
""", _F)

MASS_EFFECT_FORWARD = re.compile(r"""
    \b(?:effacement|compression|displacement|distortion|dilat(?:at)?ion|enlargement|entrapment|trapping|narrowing
        |obliteration|deformity|deformation|indentation|impression|herniation|shift|bowing|splaying|ballooning)
      \s+(?:up)?(?:on|of)\b
  | \b(?:effac|compress|displac|distort|indent|narrow|deform|obliterat|obstruct|trapp|splay|buckl)\w*ing\b
  | \b(?:compresses|displaces|effaces|indents|distorts|obstructs|deforms|narrows)\b
  | \bmass\s+effect\s+(?:up)?on\b | \bpressure\s+on\b
  | \b(?:midline|subfalcine|uncal|transtentorial|tonsillar|descending)\s+(?:shift|herniation)\b
  | \bhydrocephalus\b | \bbulg\w*\s+into\b
  | \b(?:compressed|effaced|displaced|distorted|dilated|entrapped|trapped|narrowed|obliterated|splayed)\b
""", _F)

MASS_EFFECT_BACKWARD = re.compile(r"""
    \b(?:is|are|was|were|being|been|appears?)\s+(?:(?:\w+ly|also|slightly|mildly|markedly)\s+)?
      (?:compressed|effaced|displaced|distorted|dilated|enlarged|entrapped|trapped|narrowed|obliterated
        |deformed|shifted|indented|splayed|bowed|attenuated|prominent|obscured|flattened)\b
""", _F)
# Absolute construction: "..., with the right lateral ventricle (markedly) effaced": the noun phrase between
# "with" and the participle is what is compressed (the scope is the match itself).
MASS_EFFECT_ABSOLUTE = re.compile(r"""
    \bwith\s+(?:the\s+)?(?:[\w-]+\s+){1,5}?(?:(?:\w+ly|also|slightly|mildly|markedly)\s+)?
      (?:compressed|effaced|displaced|distorted|deformed|narrowed|obliterated|flattened|dilated)\b
""", _F)

PROXIMITY_FORWARD = re.compile(r"""
    \badjacent\s+to\b | \babutt?(?:ing|s)?\b | \bin\s+contact\s+with\b | \bcontacting\b | \bclose\s+to\b
  | \bnear\b | \bbordering\b | \bencas(?:es|ing|ement\s+of)\b | \btowards?\b
  | \balong\s+the\s+(?:wall|margin|surface)\s+of\b
""", _F)

# Forward scopes end here (unless the terminator opens the scope).
TERMINATOR = re.compile(r"""
    \b(?:but|however|although|though|whereas|while|which|that|yet|except|apart\s+from|aside\s+from)\b
  | \b(?:extend\w*|extension|involv\w*|infiltrat\w*|inva[ds]\w*|spread\w*|cross\w*|caus\w*|result\w*)
  | \bwith\b | \bthere\s+(?:is|are)\b | \b(?:consistent|in\s+keeping|compatible|suggest\w*)\b | [;:]
""", _F)

# These end a forward scope even right after the cue: they introduce the lesion that causes the
# mass effect ("compressed *by* a left caudate mass", "mass effect on X *from* a left frontal tumour").
HARD_TERMINATOR = re.compile(r"\b(?:by|from|due\s+to|secondary\s+to|related\s+to)\b", re.IGNORECASE)

# Backward scopes start after the last of these before the cue.
CLAUSE_BOUNDARY = re.compile(r"""
    [;:] | ,\s*(?:and|but|while|whereas|with)\b
  | \b(?:but|however|whereas|while|although|though|which|with|where)\b | \band\s+there\b
""", _F)

# ---------------------------------------------------------------- roles (what part of the tumour a site holds)
_OEDEMA = r"o?edema(?:tous)?"
_NECROSIS = r"necros[ie]s|necrotic"
_MASS_EFFECT = r"""(?:ventricular\s+|ventricle\s+)?compression|mass\s+effect|midline\s+shift|herniation|effacement
                  |hydrocephalus"""
# A sentence whose subject is oedema / necrosis / mass effect ("Edema is ...", "The area of oedema extends ...",
# "Compression of the ventricles is present near ...") is about that component: its sites take that role.
ROLE_SUBJECT = re.compile(rf"""  # used with .match(text, sentence_start)
    \W*(?:there\s+(?:is|are)\s+)?
    (?:(?:the|a|an|some|mild|moderate|severe|marked|extensive|significant|prominent|surrounding|associated
        |peri-?lesional|peri-?tumou?ral|vasogenic|brain|cerebral|area|areas|range|extent|region|regions|zone|zones)
       \s+(?:of\s+(?:the\s+)?)?){{0,4}}
    (?:(?P<oedema>{_OEDEMA})|(?P<necrosis>{_NECROSIS})|(?P<mass_effect>{_MASS_EFFECT}))\b
""", _F)
# A sentence that continues the previous one through a pronoun subject ("It extends into the parietal lobe").
PRONOUN_SUBJECT = re.compile(r"\W*(?:it|this|these|they|the\s+latter)\b", re.IGNORECASE)
# Oedema / necrosis named inside a sentence: the sites after it, up to a terminator, are that component's
# extent ("left frontal mass with surrounding oedema extending into the parietal lobe").
ROLE_WORD = re.compile(rf"(?P<oedema>\b(?:{_OEDEMA})\b)|(?P<necrosis>\b(?:{_NECROSIS})\b)", re.IGNORECASE)
ROLE_TERMINATOR = re.compile(r"""
    [;:] | \b(?:but|however|whereas|while|although|though|no|not|without)\b
  | \b(?:lesions?|mass(?:es)?|tumou?rs?|nodules?|gliomas?|metastas[ie]s|neoplasms?)\b
""", _F)
# A finding interpreted as oedema / necrosis ("dark T1 signal within the right occipital lobe, in keeping
# with necrosis").
ROLE_INTERPRETATION = re.compile(rf"""
    \b(?:suggest\w*|indicat\w*|consistent\s+with|in\s+keeping\s+with|compatible\s+with|represent\w*|reflect\w*
      |likely|probably)
    \s+(?:(?:a|an|the|some|small|possible|probable|areas?\s+of|regions?\s+of|foci\s+of)\s+){{0,3}}
    (?:(?P<oedema>{_OEDEMA})|(?P<necrosis>{_NECROSIS}))\b
""", _F)
# Nouns that make a sentence about a lesion rather than about its oedema / necrosis alone ("focus" is not
# one: "punctate foci" are the usual words for small-vessel change).
LESION_WORD = re.compile(r"""\b(?:lesions?|mass(?:es)?|tumou?rs?|nodules?|neoplasms?|gliomas?
    |glioblastomas?|metastas[ie]s|deposits?)\b""", _F)
FOCUS_WORD = re.compile(r"\bfoc(?:i|us)\b", re.IGNORECASE)
# Hedged spread: "faint change in the left hemisphere that might reflect spread through the callosum".
# Both the observed site and the spread are uncertain; a hedged diagnosis ("may represent a glioma") is not.
HEDGE = re.compile(r"""
    \b(?:(?:may|might|could)\s+(?:also\s+|possibly\s+)?(?:represent|reflect|indicate|be|suggest|correspond\s+to)
        |possibly\s+(?:representing|reflecting|indicating))\b
    (?=\s+(?:[\w-]+\s+){0,3}?(?:extension|spread(?:ing)?|infiltration|invasion|involvement|extending|infiltrating))
""", _F)
HEDGE_BOUNDARY = re.compile(r"[;:,]|\b(?:and|with|but|however|whereas|while|although)\b", re.IGNORECASE)
HEDGE_END = re.compile(r"[;]|\b(?:but|however|whereas|although)\b", re.IGNORECASE)

# Side words of organs outside the brain ("left optic nerve", "left femoral head"): not a side of any site.
NON_BRAIN_SIDE = re.compile(r"""
    \b(?:left|right|(?-i:L|R|Lt|Rt))\s+(?:optic\s+(?:nerves?|chiasm|sheath)|orbits?|orbital|globes?|eyes?|retina\w*
      |lens|femo\w*|femur|hips?|liver|hepatic|lungs?|pulmonary|kidneys?|renal|breasts?|adrenals?|spinal|spine
      |shoulders?|arms?|legs?|knees?|neck|parotid|thyroid|maxillary|mastoid|ears?|cochlea\w*)\b
""", _F)

# ---------------------------------------------------------------- sentence-level cues
NON_TUMOUR = re.compile(r"""
    \binfarct\w* | \blacunes?\b | \blacunar\s+(?:infarct|stroke|state|lesion)\w*
  | \bisch(?:a)?emi\w* | \bsmall\s+vessel | \bmicroangiopath\w*
  | \bmicro-?(?:haem|hem)orrhag\w* | \bmicro-?bleeds? | \bgliosis\b | \bencephalomalaci\w* | \bcavernoma\w*
  | \bcavernous\s+malformation | \bdevelopmental\s+venous | \barachnoid\s+cysts? | \bperivascular\s+spaces?
  | \bvirchow | \bmucosal\b | \bsinus\s+disease | \bmastoid\w* | \bincidental\w* | \bdemyelinat\w*
  | \bmultiple\s+sclerosis | \bage-?related | \bsiderosis | \bpost-?operative\s+changes?
""", _F)
# Descriptions of small-vessel-type foci; they make a sentence non-tumour only when it names no lesion at all
# ("scattered punctate bright foci in the deep white matter").
NON_TUMOUR_WEAK = re.compile(r"\b(?:punctate|pinpoint|non-?specific)\b", re.IGNORECASE)
TUMOUR_WORD = re.compile(r"""
    \btumou?r\w* | \bmass(?:es)?\b | \bneoplas\w* | \bgliom\w* | \bglioblastom\w* | \bGBM\b | \bastrocytom\w*
  | \boligodendrogliom\w* | \bependymom\w* | \bmetasta\w* | \blymphom\w* | \bmedulloblastom\w* | \bmeningiom\w*
  | \bmalignan\w* | \benhanc\w* | \binfiltrat\w* | \brecurren\w* | \bresidual\b | \bcancer\b | \bcarcinoma\b
  | \bdeposits?\b | \bexpansile\b
""", _F)

CROSSES_MIDLINE = re.compile(r"""
    \bcross(?:es|ing|ed)?\s+(?:the\s+|over\s+the\s+)?(?:midline|corpus\s+callosum)\b
  | \b(?:across|over)\s+the\s+midline\b
  | \bacross\s+(?:the\s+)?(?:genu|body|splenium|corpus\s+callosum)\b | \bmidline\s+crossing\b | \btranscallosal\b | \bbutterfly\b
  | \binto\s+the\s+contralateral\b | \bto\s+(?:involve\s+)?the\s+contralateral\b
""", _F)

COUNT_MULTIFOCAL = re.compile(r"\bmulti-?(?:focal|centric)\b", re.IGNORECASE)
COUNT_MULTIPLE = re.compile(r"""
    \b(?:multiple|numerous|several|innumerable|countless|two|three|four|five|six|[2-9])\s+(?:[\w-]+\s+){0,3}?
      (?:lesions|masses|foci|nodules|metastases|tumou?rs|deposits)\b
  | \b(?:a\s+)?(?:second|third|further|another|additional)\s+(?:[\w-]+\s+){0,2}?
      (?:lesion|mass|focus|nodule|metastasis|deposit|tumou?r)\b
""", _F)
COUNT_SOLITARY = re.compile(r"\b(?:solitary|single|unifocal|isolated|sole)\b", re.IGNORECASE)

# ---------------------------------------------------------------- sizes
_UNIT = r"(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)"
SIZE = re.compile(rf"""
    (?<![\w.])
    \d+(?:\.\d+)? (?:\s*-?\s*{_UNIT}\b)?                         # first dimension, unit optional
    (?:\s*(?:x|\u00d7|\*|by)\s*\d+(?:\.\d+)?(?:\s*-?\s*{_UNIT}\b)?){{0,2}}   # up to two more
""", _F)
_DIM = re.compile(rf"(\d+(?:\.\d+)?)(?:\s*-?\s*({_UNIT}))?", re.IGNORECASE)
# A size in these contexts is not the lesion's size.
SIZE_EXCLUDED_BEFORE = re.compile(r"""(?:\bshift|\bherniation|\bdisplace\w*|\bprevious(?:ly)?|\bprior|\bwas
    |\bfrom|\bbefore|\bslices?|\bthickness|\bgap|\bspacing|\bresolution)\W*(?:\w+\W+){0,2}$""", _F)
SIZE_EXCLUDED_AFTER = re.compile(r"""^\W*(?:\w+\s+){0,2}?(?:(?:midline\s+)?shift|herniation|displacement|slices?
    |isotropic|thick|(?:slice\s+)?thickness)\b""", _F)
_TO_MM = {"mm": 1.0, "cm": 10.0}


@dataclass(frozen=True)
class SizeMention:
    """A measurement in the text: dimensions in mm (order as written) and its character span."""

    size_mm: tuple[float, ...]
    span: tuple[int, int]


def parse_size(text: str) -> tuple[float, ...] | None:
    """Dimensions in mm of one measurement string, e.g. ``"41x60x38mm"`` -> ``(41.0, 60.0, 38.0)``.

    A dimension without its own unit takes the unit of the last dimension ("4.1 x 3.2 cm"); a
    measurement without any unit is not a size (``None``).
    """
    dims = _DIM.findall(text)
    if not dims or not dims[-1][1]:
        return None
    last_unit = dims[-1][1].lower()
    out = []
    for value, unit in dims:
        unit = (unit or last_unit).lower()
        out.append(round(float(value) * _TO_MM["cm" if unit.startswith("c") else "mm"], 3))
    return tuple(out)


def find_sizes(text: str, start: int = 0, end: int | None = None) -> list[SizeMention]:
    """All lesion-size mentions in ``text[start:end]`` (offsets into ``text``).

    Measurements of midline shift, previous sizes ("previously 1.5 cm") and imaging parameters
    ("1 mm isotropic") are left out.
    """
    end = len(text) if end is None else end
    found = []
    for m in SIZE.finditer(text, start, end):
        size = parse_size(m.group(0))
        if size is None:
            continue
        before = text[max(start, m.start() - 30):m.start()]
        after = text[m.end():min(end, m.end() + 30)]
        if SIZE_EXCLUDED_BEFORE.search(before) or SIZE_EXCLUDED_AFTER.search(after):
            continue
        found.append(SizeMention(size, (m.start(), m.end())))
    return found
