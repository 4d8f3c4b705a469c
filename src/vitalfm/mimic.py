"""MIMIC-III facts the study relies on: vital-sign itemids, valid ranges, sepsis ICD-9 codes.

The vital-sign item lists and plausibility ranges follow MIT-LCP mimic-code's vital-sign
concepts (``pivoted_vital`` / ``vitals_first_day``): a value outside its range is dropped
(not clipped), ``error = 1`` rows are dropped, ``valuenum`` is used (NULL rows drop out), and
Fahrenheit items are range-checked in °F before conversion to °C. The "calc" temperature
duplicates (677, 679) are deliberately absent, or every temperature would count twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

CAREVUE = "carevue"
METAVISION = "metavision"


@dataclass(frozen=True)
class Vital:
    """A forecast target. ``code`` is its stable small-integer id in files."""

    code: int
    name: str
    label: str
    unit: str


@dataclass(frozen=True)
class ChartItem:
    """One chartevents itemid feeding a vital, with its plausibility range in the item's unit."""

    itemid: int
    vital: str
    system: str  # CAREVUE or METAVISION
    label: str
    unit: str  # valueuom as charted
    low: float  # exclusive lower bound
    high: float  # upper bound (inclusive only where ``high_inclusive``)
    high_inclusive: bool = False
    fahrenheit: bool = False  # convert with (v - 32) / 1.8 after the range check

    def in_range(self, value: float) -> bool:
        upper_ok = value <= self.high if self.high_inclusive else value < self.high
        return value > self.low and upper_ok

    def to_standard_unit(self, value: float) -> float:
        return (value - 32.0) / 1.8 if self.fahrenheit else value


VITALS: tuple[Vital, ...] = (
    Vital(1, "heart_rate", "Heart rate", "bpm"),
    Vital(2, "sbp", "Systolic blood pressure", "mmHg"),
    Vital(3, "dbp", "Diastolic blood pressure", "mmHg"),
    Vital(4, "mbp", "Mean arterial pressure", "mmHg"),
    Vital(5, "resp_rate", "Respiratory rate", "insp/min"),
    Vital(6, "spo2", "Oxygen saturation (SpO2)", "%"),
    Vital(7, "temperature", "Temperature", "°C"),
)
VITAL_BY_NAME = MappingProxyType({v.name: v for v in VITALS})
VITAL_NAMES: tuple[str, ...] = tuple(v.name for v in VITALS)

_CV, _MV = CAREVUE, METAVISION
CHART_ITEMS: tuple[ChartItem, ...] = (
    # heart rate
    ChartItem(211, "heart_rate", _CV, "Heart Rate", "BPM", 0, 300),
    ChartItem(220045, "heart_rate", _MV, "Heart Rate", "bpm", 0, 300),
    # systolic: arterial, then non-invasive / manual
    ChartItem(51, "sbp", _CV, "Arterial BP [Systolic]", "mmHg", 0, 400),
    ChartItem(6701, "sbp", _CV, "Arterial BP #2 [Systolic]", "mmHg", 0, 400),
    ChartItem(455, "sbp", _CV, "NBP [Systolic]", "mmHg", 0, 400),
    ChartItem(442, "sbp", _CV, "Manual BP [Systolic]", "mmHg", 0, 400),
    ChartItem(220050, "sbp", _MV, "Arterial Blood Pressure systolic", "mmHg", 0, 400),
    ChartItem(220179, "sbp", _MV, "Non Invasive Blood Pressure systolic", "mmHg", 0, 400),
    # diastolic
    ChartItem(8368, "dbp", _CV, "Arterial BP [Diastolic]", "mmHg", 0, 300),
    ChartItem(8555, "dbp", _CV, "Arterial BP #2 [Diastolic]", "mmHg", 0, 300),
    ChartItem(8441, "dbp", _CV, "NBP [Diastolic]", "mmHg", 0, 300),
    ChartItem(8440, "dbp", _CV, "Manual BP [Diastolic]", "mmHg", 0, 300),
    ChartItem(220051, "dbp", _MV, "Arterial Blood Pressure diastolic", "mmHg", 0, 300),
    ChartItem(220180, "dbp", _MV, "Non Invasive Blood Pressure diastolic", "mmHg", 0, 300),
    # mean arterial pressure
    ChartItem(52, "mbp", _CV, "Arterial BP Mean", "mmHg", 0, 300),
    ChartItem(6702, "mbp", _CV, "Arterial BP Mean #2", "mmHg", 0, 300),
    ChartItem(456, "mbp", _CV, "NBP Mean", "mmHg", 0, 300),
    ChartItem(443, "mbp", _CV, "Manual BP Mean(calc)", "mmHg", 0, 300),
    ChartItem(220052, "mbp", _MV, "Arterial Blood Pressure mean", "mmHg", 0, 300),
    ChartItem(220181, "mbp", _MV, "Non Invasive Blood Pressure mean", "mmHg", 0, 300),
    ChartItem(225312, "mbp", _MV, "ART BP mean", "mmHg", 0, 300),
    # respiratory rate
    ChartItem(618, "resp_rate", _CV, "Respiratory Rate", "BPM", 0, 70),
    ChartItem(615, "resp_rate", _CV, "Resp Rate (Total)", "BPM", 0, 70),
    ChartItem(220210, "resp_rate", _MV, "Respiratory Rate", "insp/min", 0, 70),
    ChartItem(224690, "resp_rate", _MV, "Respiratory Rate (Total)", "insp/min", 0, 70),
    # SpO2 (100 % is a valid reading)
    ChartItem(646, "spo2", _CV, "SpO2", "%", 0, 100, high_inclusive=True),
    ChartItem(220277, "spo2", _MV, "O2 saturation pulseoxymetry", "%", 0, 100, high_inclusive=True),
    # temperature: Celsius items, and Fahrenheit items converted after their own range check
    ChartItem(676, "temperature", _CV, "Temperature C", "Deg. C", 10, 50),
    ChartItem(678, "temperature", _CV, "Temperature F", "Deg. F", 70, 120, fahrenheit=True),
    ChartItem(223762, "temperature", _MV, "Temperature Celsius", "?C", 10, 50),
    ChartItem(223761, "temperature", _MV, "Temperature Fahrenheit", "?F", 70, 120, fahrenheit=True),
)
CHART_ITEM_BY_ID = MappingProxyType({item.itemid: item for item in CHART_ITEMS})

# Duplicated "calc" temperature items: converted copies of 676/678 (mimic-code issue #501).
EXCLUDED_DUPLICATE_ITEMS: tuple[int, ...] = (677, 679)


def items_for(vital_names: tuple[str, ...] | list[str]) -> tuple[ChartItem, ...]:
    wanted = set(vital_names)
    return tuple(item for item in CHART_ITEMS if item.vital in wanted)


# --- sepsis definitions (ICD-9-CM, stored without the decimal point) ---------------------

# 995.91 sepsis, 995.92 severe sepsis, 785.52 septic shock. mimic-code's explicit.sql uses only
# 99592 and 78552; 99591 is the common addition in forecasting work.
DEFAULT_EXPLICIT_SEPSIS_CODES: tuple[str, ...] = ("99591", "99592", "78552")

# Angus et al. (2001), as used by mimic-code's angus.sql: infection AND (organ dysfunction OR
# mechanical ventilation), OR an explicit severe sepsis / septic shock code.
ANGUS_INFECTION_PREFIXES_3: tuple[str, ...] = (
    "001", "002", "003", "004", "005", "008", "009", "010", "011", "012", "013", "014",
    "015", "016", "017", "018", "020", "021", "022", "023", "024", "025", "026", "027",
    "030", "031", "032", "033", "034", "035", "036", "037", "038", "039", "040", "041",
    "090", "091", "092", "093", "094", "095", "096", "097", "098", "100", "101", "102",
    "103", "104", "110", "111", "112", "114", "115", "116", "117", "118", "320", "322",
    "324", "325", "420", "421", "451", "461", "462", "463", "464", "465", "481", "482",
    "485", "486", "494", "510", "513", "540", "541", "542", "566", "567", "590", "597",
    "601", "614", "615", "616", "681", "682", "683", "686", "730",
)  # fmt: skip
ANGUS_INFECTION_PREFIXES_4: tuple[str, ...] = (
    "5695", "5720", "5721", "5750", "5990", "7110", "7907", "9966", "9985", "9993",
)  # fmt: skip
ANGUS_INFECTION_CODES_5: tuple[str, ...] = ("49121", "56201", "56203", "56211", "56213", "56983")
ANGUS_ORGAN_DYSFUNCTION_PREFIXES: tuple[str, ...] = (
    "458", "293", "570", "584", "7855", "3483", "3481", "2874", "2875", "2869", "2866", "5734",
)  # fmt: skip
ANGUS_EXPLICIT_CODES: tuple[str, ...] = ("99592", "78552")
# ICD-9 procedure codes for mechanical ventilation (96.70, 96.71, 96.72)
MECHANICAL_VENTILATION_PROCEDURES: tuple[str, ...] = ("9670", "9671", "9672")

# Patients older than 89 have their date of birth shifted 300 years before the first admission.
# Their true median age is 91.4 years; we report that, as sepsis3-mimic does.
AGE_SHIFT_THRESHOLD_YEARS = 150.0
SHIFTED_AGE_YEARS = 91.4
