"""What options data records teach us about an exporter, and how it is applied.

Applied to later data records of the same session and observation domain (the
result goes to ``FlowRecord.extra``, never over a value the exporter sent):

* sampling: ``samplingInterval`` (34), ``samplingPacketInterval``/``samplingPacketSpace``
  (305/306), per sampler id (48 samplerId / 302 selectorId / 49-50 v9 flow sampler) when
  the options record is scoped by one -> ``samplingRate``;
* ``systemInitTimeMilliseconds`` (160) -> absolute ``flowStartMilliseconds`` /
  ``flowEndMilliseconds`` for records that carry only sysUpTime-relative times;
* interface names (``interfaceName`` 82 / ``interfaceDescription`` 83 scoped by an
  ifIndex) -> ``ingressInterfaceName`` / ``egressInterfaceName``;
* application names (``applicationName`` 96 scoped by ``applicationId`` 95) ->
  ``applicationName`` for records that only carry the id.

NetFlow v9 and v5 times relative to sysUpTime are converted with the message header
(export time and sysUpTime), modulo 2^32 as RFC 3954 counters wrap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .values import iso_from_millis

_SAMPLER_KEYS = ("samplerId", "selectorId", "flowSamplerId")
_IFINDEX_KEYS = ("ingressInterface", "egressInterface", "scopeInterface")
# sysUpTime-relative element -> the absolute element derived from it
SYSUPTIME_TIMES = (("flowStartSysUpTime", "flowStartMilliseconds"), ("flowEndSysUpTime", "flowEndMilliseconds"))
MAX_NAMES = 65536  # bound per-exporter maps so a hostile exporter cannot grow them forever


@dataclass(slots=True)
class ExporterOptions:
    sampling_rate: int | None = None
    sampler_rates: dict = field(default_factory=dict)
    system_init_ms: int | None = None
    interface_names: dict = field(default_factory=dict)
    application_names: dict = field(default_factory=dict)

    def learn(self, options_record: dict) -> None:
        """Take what matters from one options data record."""
        rate = _sampling_rate(options_record)
        if rate is not None:
            sampler = next((options_record[k] for k in _SAMPLER_KEYS if k in options_record), None)
            if sampler is None:
                self.sampling_rate = rate
            elif len(self.sampler_rates) < MAX_NAMES:
                self.sampler_rates[sampler] = rate
        init = options_record.get("systemInitTimeMilliseconds")
        if isinstance(init, str):
            self.system_init_ms = _millis_from_iso(init)
        name = options_record.get("interfaceName") or options_record.get("interfaceDescription")
        if name:
            index = next((options_record[k] for k in _IFINDEX_KEYS if k in options_record), None)
            if index is not None and len(self.interface_names) < MAX_NAMES:
                self.interface_names[index] = name
        app = options_record.get("applicationName")
        if app and "applicationId" in options_record and len(self.application_names) < MAX_NAMES:
            self.application_names[options_record["applicationId"]] = app

    @property
    def empty(self) -> bool:
        return (self.sampling_rate is None and not self.sampler_rates and self.system_init_ms is None
                and not self.interface_names and not self.application_names)

    def apply(self, fields: dict, extra: dict, export_ms: int) -> None:
        rate = None
        if self.sampler_rates:
            sampler = next((fields[k] for k in _SAMPLER_KEYS if k in fields), None)
            rate = self.sampler_rates.get(sampler)
        if rate is None:
            rate = self.sampling_rate
        if rate is not None and "samplingInterval" not in fields:
            extra["samplingRate"] = rate
        if self.system_init_ms is not None:
            for relative, absolute in SYSUPTIME_TIMES:
                value = fields.get(relative)
                if isinstance(value, int) and absolute not in fields:
                    extra[absolute] = iso_from_millis(_unwrap_uptime(self.system_init_ms, value, export_ms))
        if self.interface_names:
            for key, out in (("ingressInterface", "ingressInterfaceName"), ("egressInterface", "egressInterfaceName")):
                index = fields.get(key)
                if index is not None and index in self.interface_names:
                    extra[out] = self.interface_names[index]
        if self.application_names and "applicationName" not in fields:
            app = self.application_names.get(fields.get("applicationId"))
            if app:
                extra["applicationName"] = app


_WRAP = 1 << 32
_SLACK_MS = 60_000  # exporter clocks run a little ahead of their export timestamps


def _unwrap_uptime(init_ms: int, uptime_ms: int, export_ms: int) -> int:
    """init + uptime, where the 32-bit uptime wraps every 49.7 days: take the latest
    candidate that is not after the message's export time."""
    absolute = init_ms + uptime_ms
    if export_ms <= 0 or absolute > export_ms + _SLACK_MS:
        return absolute
    wraps = (export_ms + _SLACK_MS - absolute) // _WRAP
    return absolute + wraps * _WRAP


def _sampling_rate(record: dict) -> int | None:
    interval = record.get("samplingInterval")
    if isinstance(interval, int) and interval > 0:
        return interval
    interval = record.get("samplerRandomInterval")
    if isinstance(interval, int) and interval > 0:
        return interval
    selected = record.get("samplingPacketInterval")
    space = record.get("samplingPacketSpace")
    if isinstance(selected, int) and selected > 0 and isinstance(space, int):
        return (selected + space) // selected
    return None


def _millis_from_iso(text: str) -> int | None:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def apply_sysuptime(fields: dict, extra: dict, export_ms: int, sys_uptime_ms: int) -> None:
    """v9/v5: absolute flow times from sysUpTime-relative ones (RFC 3954 section 5.1)."""
    for relative, absolute in SYSUPTIME_TIMES:
        value = fields.get(relative)
        if isinstance(value, int) and absolute not in fields:
            extra[absolute] = iso_from_millis(export_ms - ((sys_uptime_ms - value) & 0xFFFFFFFF))
