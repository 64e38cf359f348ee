"""The language of what KernelNotes writes into pages: gettext catalogs read with Babel.

The site's language is mkdocs.yml's `theme.language` (Settings.language); English is the source
language of every message, so it needs no catalog, and another language is one gettext catalog,
`kernelnotes/locale/<language>.po` (read directly with Babel's `read_po`: no compile step, nothing to
build on install). Dates and numbers are formatted for the locale with Babel (2026年11月24日 in zh).
Only page text goes through here: CLI output stays English.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"


def _(message: str) -> str:
    """Mark a message for the catalogs (extraction only); translate it with `Translator.gettext`."""
    return message


class Translator:
    """Messages, dates and numbers in one language (English when no catalog exists for it)."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.messages = _catalog(language)
        try:
            self.locale = Locale.parse(language.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            self.locale = Locale.parse(SOURCE_LANGUAGE)

    def gettext(self, message: str, **values: object) -> str:
        text = self.messages.get(message) or message
        return text.format(**values) if values else text

    def date(self, iso: str) -> str:
        """An ISO timestamp ("2026-11-24T06:37:00+00:00") as the locale writes a day."""
        try:
            return format_date(dt.datetime.fromisoformat(iso).date(), "long", locale=self.locale)
        except ValueError:
            return iso[:10]

    def datetime(self, iso: str) -> str:
        """An ISO timestamp as the locale writes a day and a time to the minute."""
        try:
            moment = dt.datetime.fromisoformat(iso)
        except ValueError:
            return iso[:16].replace("T", " ")
        day = format_date(moment.date(), "long", locale=self.locale)
        return f"{day} {format_datetime(moment, 'HH:mm', locale=self.locale)}"


@functools.lru_cache(maxsize=16)
def _catalog(language: str) -> dict[str, str]:
    """msgid -> translation for `language` ("zh-CN" falls back to "zh"); empty for English."""
    for name in dict.fromkeys((language, language.replace("-", "_"), language.split("-")[0].split("_")[0])):
        path = LOCALE_DIR / f"{name}.po"
        if name and path.is_file():
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=name.replace("-", "_"))
            return {str(m.id): str(m.string) for m in catalog if m.id and m.string and not m.fuzzy}
    return {}


def translator(language: str | None) -> Translator:
    return _translator(language or SOURCE_LANGUAGE)


@functools.lru_cache(maxsize=16)
def _translator(language: str) -> Translator:
    return Translator(language)


def catalog_messages(language: str) -> dict[str, str]:
    """Every message of a language's catalog (for tests and translators)."""
    return dict(_catalog(language))


def device_label(device: str, device_class: str, t: Translator) -> str:
    """A readable device name: "CPU（2 核）" for "AMD EPYC 9454 (2 cores)", a GPU's name as it is."""
    if device_class != "cpu":
        return device
    cores = device.rsplit("(", 1)[-1].split(" ", 1)[0] if device.endswith("cores)") else ""
    return t.gettext("CPU ({cores} cores)", cores=cores) if cores.isdigit() else t.gettext("CPU")
