"""Fixed vocabularies of the synthetic MIMIC-III: ICD-9 codes with titles, chart items, and the
categorical values of the administrative tables.

ICD-9-CM codes are stored without the decimal point (995.92 -> ``99592``); V and E codes keep
their letter. Titles follow the ICD-9-CM short (<= 24 characters in the source) and long titles.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitalfm.mimic import CAREVUE, CHART_ITEMS, METAVISION

# --- ICD-9 diagnoses ------------------------------------------------------------------------

#: code -> (short_title, long_title)
DIAGNOSES: dict[str, tuple[str, str]] = {
    # explicit sepsis codes
    "99591": ("Sepsis", "Sepsis"),
    "99592": ("Severe sepsis", "Severe sepsis"),
    "78552": ("Septic shock", "Septic shock"),
    # infections (all match an Angus infection prefix)
    "0389": ("Septicemia NOS", "Unspecified septicemia"),
    "03811": (
        "Meth susc Staph aur sept",
        "Methicillin susceptible Staphylococcus aureus septicemia",
    ),
    "486": ("Pneumonia, organism NOS", "Pneumonia, organism unspecified"),
    "481": (
        "Pneumococcal pneumonia",
        "Pneumococcal pneumonia [Streptococcus pneumoniae pneumonia]",
    ),
    "5990": ("Urin tract infection NOS", "Urinary tract infection, site not specified"),
    "6826": ("Cellulitis of leg", "Cellulitis and abscess of leg, except foot"),
    "5672": ("Suppurat peritonitis NEC", "Other suppurative peritonitis"),
    "00845": (
        "Int inf clstrdium dfcile",
        "Intestinal infection due to Clostridium difficile",
    ),
    # organ dysfunction (Angus)
    "5849": ("Acute kidney failure NOS", "Acute kidney failure, unspecified"),
    "5845": (
        "Ac kidny fail, tubr necr",
        "Acute kidney failure with lesion of tubular necrosis",
    ),
    "78559": ("Shock w/o trauma NEC", "Other shock without mention of trauma"),
    "2874": ("Secondary thrombocytopenia", "Secondary thrombocytopenia"),
    "2875": ("Thrombocytopenia NOS", "Thrombocytopenia, unspecified"),
    "570": ("Acute necrosis of liver", "Acute and subacute necrosis of liver"),
    "4589": ("Hypotension NOS", "Hypotension, unspecified"),
    # ordinary ICU diagnoses (no infection, no explicit sepsis)
    "51881": ("Acute respiratry failure", "Acute respiratory failure"),
    "4280": ("CHF NOS", "Congestive heart failure, unspecified"),
    "41401": (
        "Crnry athrscl natve vssl",
        "Coronary atherosclerosis of native coronary artery",
    ),
    "41071": (
        "Subendo infarct, initial",
        "Subendocardial infarction, initial episode of care",
    ),
    "4241": ("Aortic valve disorder", "Aortic valve disorders"),
    "4019": ("Hypertension NOS", "Unspecified essential hypertension"),
    "42731": ("Atrial fibrillation", "Atrial fibrillation"),
    "25000": (
        "DMII wo cmp nt st uncntr",
        "Diabetes mellitus without mention of complication, type II or unspecified type, "
        "not stated as uncontrolled",
    ),
    "2724": ("Hyperlipidemia NEC/NOS", "Other and unspecified hyperlipidemia"),
    "431": ("Intracerebral hemorrhage", "Intracerebral hemorrhage"),
    "5789": ("Gastrointest hemorr NOS", "Hemorrhage of gastrointestinal tract, unspecified"),
    "496": ("Chr airway obstruct NEC", "Chronic airway obstruction, not elsewhere classified"),
    "2762": ("Acidosis", "Acidosis"),
    "2851": ("Ac posthemorrhag anemia", "Acute posthemorrhagic anemia"),
    "5859": ("Chronic kidney dis NOS", "Chronic kidney disease, unspecified"),
    "2449": ("Hypothyroidism NOS", "Unspecified acquired hypothyroidism"),
    "3051": ("Tobacco use disorder", "Tobacco use disorder"),
    "53081": ("Esophageal reflux", "Esophageal reflux"),
    "311": ("Depressive disorder NEC", "Depressive disorder, not elsewhere classified"),
    "V4581": ("Aortocoronary bypass", "Aortocoronary bypass status"),
    "V5861": ("Long-term use anticoagul", "Long-term (current) use of anticoagulants"),
    "E8788": (
        "Abn react-surg proc NEC",
        "Other specified surgical operations and procedures causing abnormal patient reaction, "
        "or of later complication, without mention of misadventure at time of operation",
    ),
}

EXPLICIT_SETS: tuple[tuple[str, ...], ...] = (
    ("99591",),
    ("99592",),
    ("99592", "78552"),
    ("78552",),
)
EXPLICIT_SET_P = (0.25, 0.40, 0.30, 0.05)
INFECTION_CODES = ("0389", "03811", "486", "481", "5990", "6826", "5672", "00845")
INFECTION_P = (0.30, 0.05, 0.25, 0.05, 0.18, 0.07, 0.05, 0.05)
ORGAN_DYSFUNCTION_CODES = ("5849", "5845", "78559", "2874", "2875", "570", "4589")
ORGAN_DYSFUNCTION_P = (0.35, 0.10, 0.15, 0.10, 0.12, 0.03, 0.15)
ORDINARY_CODES = (
    "51881", "4280", "41401", "41071", "4241", "4019", "42731", "25000", "2724", "431",
    "5789", "496", "2762", "2851", "5859", "2449", "3051", "53081", "311", "V4581", "V5861",
    "E8788",
)  # fmt: skip

# --- ICD-9 procedures -------------------------------------------------------------------------

PROCEDURES: dict[str, tuple[str, str]] = {
    "9671": (
        "Cont inv mec ven <96 hrs",
        "Continuous invasive mechanical ventilation for less than 96 consecutive hours",
    ),
    "9672": (
        "Cont inv mec ven 96+ hrs",
        "Continuous invasive mechanical ventilation for 96 consecutive hours or more",
    ),
    "9604": ("Insert endotracheal tube", "Insertion of endotracheal tube"),
    "3893": ("Venous cath NEC", "Venous catheterization, not elsewhere classified"),
    "3891": ("Arterial catheterization", "Arterial catheterization"),
    "9904": ("Packed cell transfusion", "Transfusion of packed cells"),
    "3995": ("Hemodialysis", "Hemodialysis"),
    "9390": ("Non-invasive mech vent", "Non-invasive mechanical ventilation"),
    "3961": (
        "Extracorporeal circulat",
        "Extracorporeal circulation auxiliary to open heart surgery",
    ),
    "8856": ("Coronar arteriogr-2 cath", "Coronary arteriography using two catheters"),
    "966": (
        "Entral infus nutrit sub",
        "Enteral infusion of concentrated nutritional substances",
    ),
}
OTHER_PROCEDURES = ("3893", "9904", "3995", "9390", "3961", "8856", "966")

# --- chart items ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemDef:
    """A d_items row."""

    itemid: int
    label: str
    abbreviation: str | None
    dbsource: str
    category: str | None
    unitname: str | None
    param_type: str | None


_ABBREVIATIONS = {
    "heart_rate": "HR",
    "sbp": "SBP",
    "dbp": "DBP",
    "mbp": "MAP",
    "resp_rate": "RR",
    "spo2": "SpO2",
    "temperature": "Temp",
}
_ABBREV_OVERRIDES = {
    220050: "ABPs",
    220051: "ABPd",
    220052: "ABPm",
    225312: "ART BP mean",
    220179: "NBPs",
    220180: "NBPd",
    220181: "NBPm",
    224690: "RR (Total)",
    223761: "Temperature F",
    223762: "Temperature C",
}


def _vital_item_defs() -> list[ItemDef]:
    out = []
    for item in CHART_ITEMS:
        out.append(
            ItemDef(
                item.itemid,
                item.label,
                _ABBREV_OVERRIDES.get(item.itemid, _ABBREVIATIONS[item.vital]),
                item.system,
                "Routine Vital Signs",
                item.unit,
                "Numeric" if item.system == METAVISION else None,
            )
        )
    return out


# Charted items beyond the vitals, and items present in d_items but never charted.
CV_TEMP_C_CALC = 677
CV_TEMP_F_CALC = 679
CV_GCS_TOTAL = 198
CV_HEART_RHYTHM = 212
MV_GCS_EYE = 220739
MV_HEART_RHYTHM = 220048

_EXTRA_ITEM_DEFS = [
    ItemDef(677, "Temperature C (calc)", "Temp C (calc)", CAREVUE, "Routine Vital Signs",
            "Deg. C", None),
    ItemDef(679, "Temperature F (calc)", "Temp F (calc)", CAREVUE, "Routine Vital Signs",
            "Deg. F", None),
    ItemDef(198, "GCS Total", "GCS", CAREVUE, "Neurological", "points", None),
    ItemDef(212, "Heart Rhythm", "Rhythm", CAREVUE, "Routine Vital Signs", None, None),
    ItemDef(220739, "GCS - Eye Opening", "GCS - Eye Opening", METAVISION, "Neurological",
            None, "Text"),
    ItemDef(220048, "Heart Rhythm", "Heart Rhythm", METAVISION, "Routine Vital Signs", None,
            "Text"),
    # in d_items but not charted by the generator (as many real items are)
    ItemDef(3655, "Temp Skin [C]", None, CAREVUE, None, "Deg. C", None),
    ItemDef(3652, "Temp Axillary [F]", None, CAREVUE, None, "Deg. F", None),
    ItemDef(226329, "Blood Temperature CCO (C)", "Blood Temp CCO (C)", METAVISION,
            "Routine Vital Signs", "?C", "Numeric"),
    ItemDef(225309, "ART BP Systolic", "ART BP Systolic", METAVISION, "Routine Vital Signs",
            "mmHg", "Numeric"),
    ItemDef(225310, "ART BP Diastolic", "ART BP Diastolic", METAVISION, "Routine Vital Signs",
            "mmHg", "Numeric"),
]  # fmt: skip

ITEM_DEFS: tuple[ItemDef, ...] = tuple(
    sorted(_vital_item_defs() + _EXTRA_ITEM_DEFS, key=lambda d: (d.dbsource, d.itemid))
)

CV_RHYTHMS = ("Sinus Rhythm", "Sinus Tachy", "Sinus Brady", "Atrial Fib")
MV_RHYTHMS = (
    "SR (Sinus Rhythm)",
    "ST (Sinus Tachycardia)",
    "SB (Sinus Bradycardia)",
    "AF (Atrial Fibrillation)",
)
MV_GCS_EYE_TEXT = ("No Response", "To Pain", "To Speech", "Spontaneously")  # valuenum 1..4
TEXT_ONLY_VALUES = ("Unable to assess", "Not done")

# --- administrative values --------------------------------------------------------------------

ADMISSION_TYPES = ("EMERGENCY", "URGENT", "ELECTIVE")
ADMISSION_TYPE_P = (0.75, 0.07, 0.18)
ADMISSION_LOCATIONS = (
    "EMERGENCY ROOM ADMIT",
    "TRANSFER FROM HOSP/EXTRAM",
    "PHYS REFERRAL/NORMAL DELI",
    "CLINIC REFERRAL/PREMATURE",
)
DISCHARGE_LOCATIONS = ("HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP")
DEAD = "DEAD/EXPIRED"
INSURANCES = ("Medicare", "Private", "Medicaid", "Government", "Self Pay")
INSURANCE_P = (0.55, 0.30, 0.10, 0.03, 0.02)
LANGUAGES = ("ENGL", "SPAN", "RUSS", "PTUN", None)
LANGUAGE_P = (0.62, 0.04, 0.02, 0.02, 0.30)
RELIGIONS = ("CATHOLIC", "NOT SPECIFIED", "PROTESTANT QUAKER", "JEWISH", "UNOBTAINABLE", None)
RELIGION_P = (0.35, 0.25, 0.15, 0.08, 0.1, 0.07)
MARITAL = ("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", None)
MARITAL_P = (0.45, 0.25, 0.13, 0.07, 0.10)
ETHNICITIES = (
    "WHITE",
    "BLACK/AFRICAN AMERICAN",
    "HISPANIC OR LATINO",
    "ASIAN",
    "UNKNOWN/NOT SPECIFIED",
)
ETHNICITY_P = (0.70, 0.10, 0.04, 0.04, 0.12)
SEPSIS_ADMIT_DIAGNOSES = ("SEPSIS", "PNEUMONIA", "UROSEPSIS", "FEVER", "HYPOTENSION")
OTHER_ADMIT_DIAGNOSES = (
    "CONGESTIVE HEART FAILURE",
    "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA",
    "GASTROINTESTINAL BLEED",
    "INTRACRANIAL HEMORRHAGE",
    "CHEST PAIN",
    "RESPIRATORY FAILURE",
)
CAREUNITS = ("MICU", "SICU", "CCU", "CSRU", "TSICU")
CAREUNIT_P = (0.40, 0.15, 0.15, 0.18, 0.12)
WARDIDS = {"MICU": (50, 52), "SICU": (33, 57), "CCU": (7, 57), "CSRU": (14, 15), "TSICU": (12, 14)}
SERVICES = {"MICU": "MED", "SICU": "SURG", "CCU": "CMED", "CSRU": "CSURG", "TSICU": "TRAUM"}
CAREGIVER_LABELS = ("RN", "RN", "RN", "RN", "MD", "Res", "RRT", "NP")
