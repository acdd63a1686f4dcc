"""Bounces: delivery-status reports, feedback reports, Amazon SES notifications and the
plain-text bounces of servers that send neither; why each failure happened, whether the
address is bad, which addresses failed and which message came back.

Owns: the rules arf_complaint, dsn_report, ses_notification and bounce_text, the reason of one
failure (`reason`, shared with `smtp_refusal` for refusals at RCPT or DATA), and the returned
message's ids. The words here are mail servers' (English server texts, status codes), not a
person's: they stay patterns in this module, tried in a fixed order as Sisimai's reasons are.
Every pattern runs on lowered text (a space in a `_words` phrase also matches a line break:
MTAs wrap their text).
"""

from __future__ import annotations

import functools
import re
from email.message import Message

from flufl.bounce import all_failures

from sequencer.classify.parse import (
    ADDR,
    Mail,
    Rcpt,
    addresses,
    bare_address,
    first_msgid,
    header,
    is_reply_subject,
    msgids,
    payload_text,
)
from sequencer.classify.verdict import BounceKind, Hit, Verdict


def _words(*alternatives: str) -> re.Pattern[str]:
    """An alternation over lowered text in which a space also matches a line break."""
    return re.compile("|".join(a.replace(" ?", r"\s*").replace(" ", r"\s+") for a in alternatives))


_DAEMON_LOCAL = re.compile(
    r"^(mailer-?daemon|mail-?daemon|postmaster|post_master|mdaemon|mailerdaemon|"
    r"mail\.?delivery)$",
    re.I,
)
_MAILER_DAEMON = re.compile(r"^mail(er)?-?daemon$", re.I)
_DAEMON_NAME = re.compile(
    r"mail delivery (sub)?system|mail ?delivery ?service|mailer[- ]daemon|postmaster|"
    r"mail administrator|internet mail delivery|system administrator",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|returning message|delivery status notification|"
    r"delivery (failure|failed|has failed|problem|notification)|failure notice|"
    r"mail delivery failed|could not be delivered|not delivered|non[- ]?delivery|"
    r"delivery report|mail system error|mail (delivery )?error|delayed mail|"
    r"warning: message .* delayed|message delayed|delivery delay|returned to sender|"
    r"nondeliverable|unzustellbar|nicht zustellbar|non remis|non recapitabile|"
    r"onbestelbaar|olevererbar|no se puede entregar|no entregado|não entregue|"
    r"mail could not|message rejected|rejected:|mail failure|bounced"
)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn'?t be delivered|was not delivered|delivery (has )?failed|"
    r"permanent (error|failure|fatal)|undeliverable|undelivered|unable to deliver|"
    r"wasn'?t able to deliver|delivery to the following recipient|"
    r"following address(es)? failed|following recipients? (failed|could not)|"
    r"message could not|delivery (status notification|problem)|returned mail|"
    r"user unknown|unknown user|no such user|mailbox (unavailable|not found|full)|"
    r"delivery to .* failed|not be delivered|failed permanently|hop count|"
    r"message was not accepted|rejected your message|did not reach|"
    r"has been delayed|delivery is delayed|will be retried|still trying|"
    r"delivery attempts? (will continue|failed)|message (has )?bounced|"
    r"this is the mail system at|i'?m sorry to (have to )?inform you"
)
# A returned message's Message-ID/References lines, quoted or not, with continuation lines.
_RETURNED_ID_LINE = re.compile(
    r"^[ \t>]*(message-id|references)[ \t]*:[ \t]*((?:.*)(?:\n[ \t]+<.*)*)", re.I | re.M
)
# Exchange Online's directory-based edge blocking refuses addresses its directory lacks.
_EXCHANGE_DBEB = _words(r"5\.4\.1 .{0,80}recipient address rejected: access denied")
# Providers' own words for "no such account", as Sisimai's Rhost tables read them: they beat
# the after-DATA heuristic (Yahoo checks recipients at DATA) and vague codes. Yahoo: "This user
# doesn't have a yahoo.com account"; Symantec MessageLabs answers "542 <address> Rejected".
_PROVIDER_UNKNOWN = _words(
    r"(this user|recipient) (doesn'?t|does not) have an? [\w.-]+\.[a-z]+ account",
    r"^\W*(smtp;)? ?542 rejected\b",
)
# Quoted header lines of the returned message ("Subject: Virus alert") are not reasons.
_URL_FRAGMENT = re.compile(r"\b((?:https?|ftp)://[^\s#]+)#\S*")
_HEADER_LINE = re.compile(r"^[ \t]*(subject|to|cc|from|sent|date)[ \t]*:.*$", re.M)
# "550 : User unknown" with the address left out: Japanese carriers' answer for a filtered
# sender (the mailbox exists); with the address filled in it is a real unknown user.
_BLANK_USER_UNKNOWN = re.compile(r"\b550:?\s+:\s*user unknown")
_QUOTED_TO = re.compile(r"^[ \t>]*To[ \t]*:[ \t]*(.+)$", re.M)
# Postfix's own wording when its recipient lookup fails (local/virtual recipient table).
_RCPT_REJECTED_UNKNOWN = _words(r"recipient address rejected: user unknown\b")
_DATA_STAGE = re.compile(r"(>>>|in reply to|after)\s*(end of\s*)?data\b")

# Reasons. Words win over codes: "552 5.2.2 mailbox full" is soft, "550 5.7.1 No such user" hard.
# A space in these phrases also matches a line break or several spaces: MTAs wrap their text.
_FULL = _words(
    r"quota|mailbox (is |was )?full|inbox (is )?full|full mailbox|mailbox size",
    r"mail ?folder is full",
    r"(disk|storage) (space|limit)|not enough (storage|space)|insufficient (storage|space|disk)",
    r"exceed(s|ed)? (the |its )?(storage|quota|disk|mailbox)|mailbox has exceeded|over ?quota",
    r"exdiskquota|space (limit|exhausted)|\b[45]\.2\.2\b|zu ?viele mails|buz[óo]n lleno",
    r"postfach (ist )?voll",
)
# Passing trouble: suspended, expired, too big, looping, held. Soft whatever else is said.
_TRANSIENT = _words(
    r"suspend|disabled|expired|loop(s|ing)?\b|hop count|too many hops",
    r"not (a )?member|locked|could not be delivered for|not delivered within|maximum[- ]time",
    r"queue too long|in the queue|moderator|held until|processing error|being processed",
    r"(delivery )?failed \d+ attempts|retry time|out of memory|command died|not collected",
    r"mail system problem",
)
# The recipient's size limit: the next, smaller message may pass. A recipient-side policy.
_SIZE = _words(
    r"too (large|big)|message size|size limit|message length|exceeds? (the )?(maximum )?"
    r"(message )?size",
)
# Vaguer trouble words: they make a failure soft only when no address-bad words stand beside.
_TRANSIENT_WEAK = _words(
    r"inactive|temporar(il)?y|time(d)? ?out|unreachable|deferr?ed|try (again )?later",
    r"(computer|host|server|destination) (was |is )?not (reachable|responding)",
    r"network (problem|error)|connection (refused|reset|dropped|timed|lost)",
    r"establish an smtp connection|(system|internal|local) error|resources",
    r"service (currently )?unavailable|\b4\.\d\.\d+\b",
)
_POLICY = _words(
    r"spam|\bblocked|block ?list|black ?list|blocklisted|dnsbl|\brbl\b|policy|reputation",
    r"relay(ing)? (denied|not permitted|access denied)|not permitted|denied|\bspf\b|dkim|dmarc",
    r"authenticat|\bptr\b",
    r"reverse (dns|lookup)|virus|malware|content (rejected|filter)|\bfilter|unsolicited",
    r"\bube\b|junk ?mail|rcpthosts|banned|accept attachments|\btls\b|starttls|encryption",
    r"attachments? (are |is )?not (allowed|accepted)|too many|rate limit|throttl|not allowed",
    r"prohibited|forbidden|sender (address )?(rejected|verify|verification)|domain of sender",
    r"refused due to|recipient preferences",
)
_HARD = _words(
    r"user(name)? (is )?unknown|unknown (user|recipient|local[- ]part|address|mailbox|alias|host)",
    r"no such (user|mailbox|recipient|person|address|account|local user|domain|host)",
    r"(mailbox|recipient|user|address|account|domain|host) (does not|doesn'?t|did not) exist",
    r"(mailbox|recipient|user|address|account|destination|host|domain|user name) (was )?not found",
    r"not (a )?(valid|known) (user|recipient|mailbox|address)|invalid (recipient|mailbox|user)",
    r"(user|recipient) not (listed|local|here|known)|(recipient|user|address)( name)? (is )?"
    r"not recognized|has moved|no longer (on|at|valid|available at)|wrong or no longer valid",
    r"mailbox (is )?unavailable|mailbox not available|not a valid mailbox|addressee unknown",
    r"host (or domain name )?unknown|domain (name )?not found|host \S+ not found|no such host",
    r"unroute?able|name or service not known|no mx|null mx|nxdomain|indicated no smtp service",
    r"domain is not reachable|bad destination|recipnotfound|not our customer|deactivated",
    r"doesn'?t have an? [\w.]+ account|does not have an account|no mailbox here|not listed in",
    r"unknown or illegal alias|no (account|user) by that name|invalid (final delivery )?userid",
    r"(user ?name|recipient)[^\n]{0,80}not unique|no matches to (the )?name ?server query",
    r"(does not|doesn't) have a (final )?(e-?mail )?delivery point|no valid recipients",
    r"account (has been )?(closed|removed|deleted)|address (is )?invalid|invalid address",
    r"did not (exactly )?match (an? )?[\w.]+ (e-?mail )?address",
    r"non-?existent (user|recipient|mailbox|address|account)",
    r"unbekannt|existiert nicht|inexistente|no existe|n'existe pas|inconnu",
)
# Refusals for the sender's standing: blocklists, IP/domain reputation, SPF/DKIM/DMARC, no PTR,
# a refused sender address. Recipient-side policy (groups for internal senders only, size or
# attachment limits, "recipient preferences") is not here.
_REPUTATION = _words(
    r"spamhaus|spamcop|\bsorbs\b|uceprotect|\bsurbl\b|\buribl\b|cdrbl|barracuda ?(central|rbl)",
    r"\bb\.barracudacentral|mailspike|abuseat|\bcbl\b|\bpsbl\b|sender ?score|invaluement",
    r"block ?list(ed)?|black ?list(ed)?|\bdnsbl\b|\brbl\b|blocked using",
    # Domino's "User ... not listed in Domino Directory" is an unknown user, not a blocklist.
    r"(?<=\s)(?<!not\s)listed\s(at|on|in|by)\b",
    r"\b(is|are|was|currently) (now )?listed\b|reputation|\bspf\b|\bdkim\b|\bdmarc\b",
    r"purported responsible address|\bsender ?id\b|banned sending ip|\bs3150\b",
    r"(sender|sending ip|your ip|ip address|client host|sending (mail )?server|host network|"
    r"mail from \S+) (is |has been |was )?(blocked|banned|rejected|not allowed|refused)",
    r"blocked (sender|ip)|unsolicited (mail|bulk|commercial)|\btss0[49]\b",
    r"\bptr\b|reverse (dns|lookup)|\brdns\b|not allowed to send (mail )?from",
    r"sender address rejected|domain of sender|\b5\.7\.(2[3-7])\b",
)
_REPUTATION_KIND = "reputation"  # internal: _reason's answer, reported as kind "policy"
_SENDER_SIDE = _words(r"sender address rejected", r"\b5\.1\.[78]\b", r"mail from .{0,40}rejected")
# A local delivery program (procmail, a pipe) failing says nothing about the address.
_LOCAL_AGENT = re.compile(r"^\s*x-unix\s*;|procmail|couldn'?t create|mailer error", re.M)
_HARD_CODE = re.compile(r"\b5\.1\.(0|1|2|3|6|10)\b|\b5\.4\.4\b|#5\.1\.1")
# Enhanced status codes (RFC 3463), not the middle of an IP address.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)", 0)

_DELAY_SUBJECT = re.compile(
    r"delay|still being retried|warning: message|not yet been delivered|"
    r"delivery (notification|status notification) \(delay\)|verzögert|retardé|retrasad"
)
_DELAY_BODY = re.compile(
    r"no action is required|will (continue to|keep|automatically) (try|retry|attempt)|"
    r"still (being )?(re)?tr(y|ied|ying)|has not yet been delivered|not yet been delivered|"
    r"has been delayed|delivery is delayed|will be retried|delayed \d+ hours|"
    r"message (is )?delayed|this is a warning|warning message only|"
    r"will try again|retry (again )?(until|for)|attempts will continue|will continue to be made"
)


_FEEDBACK_SUBJECT = re.compile(r"complaint|feedback loop|abuse report", re.I)

_SES_TYPE = re.compile(r'^\s*\{\s*"notificationType"\s*:\s*"(Bounce|Complaint|Delivery)"')
_SES_RECIPIENT = re.compile(r'\{[^{}]*"emailAddress"\s*:\s*"[^"]+"[^{}]*\}')
_SES_COMPLAINED = re.compile(r'"complainedRecipients"\s*:\s*\[(.*?)\]', re.S)


def returned_ids(mail: Mail) -> tuple[str, ...]:
    """Message-ID and References of the message a report returns or complains about."""
    ids: list[str] = []
    for original in mail.original_headers:
        ids += msgids(header(original, "Message-ID"))
        ids += msgids(header(original, "References"))
    text = mail.all_text
    for match in _RETURNED_ID_LINE.finditer(text):
        start, end = match.span(2)
        ids += msgids(text[start:end])  # Message-IDs keep their case: the original text
    own = first_msgid(mail.header("Message-ID"))
    return tuple(i for i in dict.fromkeys(ids) if i != own)


# ---------------------------------------------------------------------------------------------
# Bounce reasons and recipients.


@functools.lru_cache(maxsize=64)  # pure; bounces repeat one explanation per recipient
def reason(diagnostic: str, explanation: str, status: str) -> tuple[str, bool]:
    """(kind, hard) for one failure: words decide, status codes only when words are silent.

    The remote server's own words (Diagnostic-Code) are the reason when present; the
    human-readable explanation stands in when they are missing. Anything that could pass with
    time or a different message (full, blocked, too big, suspended, expired, refused after
    DATA) is soft even beside an "unknown user": a false hard bounce burns a good address for
    ever, a false soft one costs one more attempt.
    """
    diagnostic, explanation, status = diagnostic.lower(), explanation.lower(), status.lower()
    diagnostic, explanation = _words_only(diagnostic), _words_only(explanation)
    text = (diagnostic if diagnostic.strip() else explanation) + " " + status

    def found(pattern: re.Pattern[str]) -> bool:
        return pattern.search(text) is not None

    codes = [m.group(0) for m in _STATUS.finditer(status + " " + text)]
    hard_code = bool(_HARD_CODE.search(" ".join(codes)))
    if _FULL.search(diagnostic + "\n" + explanation) or any(c[2:] == "2.2" for c in codes):
        return "mailbox_full", False
    if found(_REPUTATION) and not found(_EXCHANGE_DBEB):
        return _REPUTATION_KIND, False  # reported as kind "policy" with reputation=True
    if found(_SIZE) and not found(_TRANSIENT):
        return "policy", False
    if found(_TRANSIENT) or found(_LOCAL_AGENT) or status.strip().startswith("4"):
        return "other", False
    hard_words = found(_HARD)
    if not (hard_words or hard_code) and found(_TRANSIENT_WEAK):
        return "other", False
    if found(_EXCHANGE_DBEB) or _PROVIDER_UNKNOWN.search(diagnostic):
        return "user_unknown", True
    # Policy words in free text beside an explicit 5.1.x status are usually a disclaimer.
    policy = (diagnostic.strip() or not hard_code) and found(_POLICY)
    if policy or found(_SENDER_SIDE) or found(_BLANK_USER_UNKNOWN):
        return "policy", False
    everything = f"{status} {diagnostic}\n{explanation}"
    if _DATA_STAGE.search(everything) and not _HARD_CODE.search(everything):
        return "policy", False  # accepted at RCPT, refused after DATA: a filter, not the address
    # "Recipient address rejected: User unknown" is Postfix's recipient-table lookup failing at
    # RCPT TO: the address is bad whatever code a site configured ("550 5.2.1", Sisimai's
    # userunknown for lhost-dragonfly-09.eml). Sendmail-style "5.2.1 <a>... User Unknown"
    # stays soft: Sisimai calls that one filtered (lhost-postfix-02.eml, lhost-exim-02.eml).
    if found(_RCPT_REJECTED_UNKNOWN):
        return "user_unknown", True
    # Mailbox disabled (X.2.x) or content (X.6.x) codes contradict "unknown user"; a policy
    # code (X.7.x) only counts when the words are silent ("550 5.7.1 No such user" is hard).
    if any(c[2] in "26" or (c[2] == "7" and not hard_words) for c in codes):
        return ("other" if any(c[2] == "2" for c in codes) else "policy"), False
    if hard_words or hard_code:
        return "user_unknown", True
    return "other", False


_STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def smtp_refusal(code: int, text: str) -> BounceKind:
    """What a permanent SMTP refusal (`550 5.1.1 ... User unknown`) means, by the rules
    `classify` applies to the same words in a bounce report."""
    status = _STATUS_CODE.search(text)
    kind, hard = reason(f"{code} {text}", "", status.group(1) if status else str(code))
    if hard:
        return BounceKind.USER_UNKNOWN
    return BounceKind(kind) if kind in BounceKind.__members__.values() else BounceKind.OTHER


def _words_only(text: str) -> str:
    """Reason text without links, addresses and quoted header lines: names, not words.

    A link's #fragment is not a reason: DragonFly's "User unknown. See https://.../#filtered"
    (lhost-dragonfly-09.eml) must not read as a content filter. The rest of a link may be
    one: GoDaddy's whole reason is "553 http://www.spamhaus.org/query/bl?ip=..."
    (rhost-godaddy-02.eml), so it stays.
    """
    # Each pattern needs a literal "#", "@" or ":": without one, its sub changes nothing.
    if "#" in text:
        text = _URL_FRAGMENT.sub(r"\1 ", text)
    if "@" in text:
        text = ADDR.sub(" ", text)
    return _HEADER_LINE.sub("", text) if ":" in text else text


def _flufl(msg: Message) -> tuple[set[str], set[str]]:
    """(temporary, permanent) failed addresses per flufl.bounce; its detectors can raise."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        return set(), set()

    def clean(found: frozenset[bytes]) -> set[str]:
        out: set[str] = set()
        for item in found:
            address = bare_address(item.decode("utf-8", "replace")) if len(item) < 320 else ""
            if address:
                out.add(address)
        return out

    return clean(temporary), clean(permanent)


_A = r"([^<>\s@()\[\],;:\"'|]+@[\w-]+(?:\.[\w-]+)+)"
_TEXT_RCPT = (
    # "<addr>:" (Postfix, qmail), ">>> addr" (sendmail), "addr (reason)", "addr on <date>"
    re.compile(rf"^[ \t>]*<{_A}>", re.M),
    re.compile(rf"^[ \t]*(?:>>>|\*)?[ \t]*{_A}[ \t]*(?:[:(\[<]|\.\.\.|\bon\b|$)", re.M),
    re.compile(
        r"(?:rcpt to|recipient|original-recipient|final-recipient|addressed to|error-for|"
        r"delivering your mail to|undeliverable\s+to|could not be delivered to|"
        r"your message to|following address(?:es)?|failed for|attempts|sent mail to|"
        r"generated from)"
        rf"\s*(?:\(s\))?\s*:?\s*(?:rfc822;\s*)?[<'\"]?{_A}",
    ),
    re.compile(rf"(?:\bto|\bfor)\s*:?\s*<{_A}>"),
    re.compile(rf"^[ \t<]*[45]\d\d(?:[ -][245]\.\d{{1,3}}\.\d{{1,3}})?[ \t]+<{_A}>", re.M),
    # Zoho's "addr Invalid Address, ERROR_CODE :550, ..." lines (lhost-zoho-02.eml), and the
    # alias we sent to behind a sendmail expansion: "(expanded from: <addr>)".
    re.compile(rf"^{_A}[ \t]+invalid address\b", re.M),
    re.compile(rf"\(expanded from:?[ \t]*<?{_A}>?\)"),
)


def _text_recipients(mail: Mail) -> list[str]:
    """Failed addresses stated in a non-standard bounce's explanation."""
    found: list[str] = []
    for pattern in _TEXT_RCPT:  # over lowered text: bare_address lower-cases anyway
        for match in pattern.finditer(mail.report_lowered):
            address = bare_address(match.group(1))
            if address:
                found.append(address)
    return found


def _original_to(mail: Mail) -> tuple[str, ...]:
    """The returned message's single To address, when the bounce names no recipient itself.

    Verizon's MMS gateway says only "No valid recipients for this MM" and quotes the original
    "To: 0000000000@vzwpix.com" (lhost-verizon-01.eml). Several addresses would be a guess.
    """
    found: list[str] = []
    for original in mail.original_headers:
        found += addresses(header(original, "To"))
    for match in _QUOTED_TO.finditer(mail.all_text):
        found += addresses(match.group(1))
    candidates = _not_ours(mail, found)
    return candidates if len(candidates) == 1 else ()


def _not_ours(mail: Mail, found: list[str]) -> tuple[str, ...]:
    """Drop the bounce's own From/To and daemon addresses: they never are the failed recipient."""
    skip = {mail.from_address or "", *addresses(mail.header("To")), *addresses(mail.header("Cc"))}
    out: list[str] = []
    for address in found:
        local = address.partition("@")[0]
        if address in skip or _MAILER_DAEMON.match(local):
            continue
        out.append(address)
    return tuple(dict.fromkeys(out))


def _from_daemon(mail: Mail) -> bool:
    """Bounce senders: no From at all, MAILER-DAEMON/postmaster, "Mail Delivery System"."""
    local = (mail.from_address or "").partition("@")[0]
    return (
        not mail.from_address
        or bool(_DAEMON_LOCAL.match(local))
        or bool(_DAEMON_NAME.search(mail.from_display))
        or mail.header("Return-Path").strip() == "<>"
    )


def _action(rcpt: Rcpt) -> str:
    """failed / delayed / delivered / "" from a DSN Action, or from Status when it is odd."""
    action = rcpt.action
    if action.startswith(("fail", "expire", "bounce", "reject", "undeliver")):
        return "failed"
    if action.startswith(("delay", "defer")):
        return "delayed"
    if action.startswith(("deliver", "relay", "expand")):
        return "delivered"
    return {"5": "failed", "4": "failed", "2": "delivered"}.get(rcpt.status.strip()[:1], "")


def _bounce(failures: list[tuple[str, str, bool]]) -> Hit:
    """One verdict from per-recipient (address, kind, hard) failures.

    Hard when any recipient's reason proves its address bad; `recipients` are then exactly
    those addresses, so a soft failure beside them is never marked bad by association.
    """
    hard = [address for address, _, is_hard in failures if is_hard]
    if hard:
        recipients = tuple(dict.fromkeys(a for a in hard if a))
        return Hit(
            Verdict.BOUNCE,
            kind="user_unknown",
            hard=True,
            recipients=recipients,
            also=("reason_user_unknown",),
        )
    kinds = [kind for _, kind, _ in failures]
    kind = next((k for k in kinds if k != "other"), "other")
    recipients = tuple(dict.fromkeys(a for a, _, _ in failures if a))
    if kind == _REPUTATION_KIND:  # the sender's standing, not the recipient's: kind policy
        return Hit(
            Verdict.BOUNCE,
            kind="policy",
            hard=False,
            recipients=recipients,
            reputation=True,
            also=("reason_policy", "reputation"),
        )
    return Hit(
        Verdict.BOUNCE, kind=kind, hard=False, recipients=recipients, also=(f"reason_{kind}",)
    )


def _segments(text: str, recipients: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each recipient with the stretch of explanation that follows its first mention."""
    lowered = text.lower()
    found = sorted((lowered.find(r), r) for r in recipients if r in lowered)
    if len(found) < 2 or len(found) != len(recipients):
        return [(r, text) for r in recipients] or [("", text)]
    ends = [pos for pos, _ in found[1:]] + [len(text)]
    return [(r, text[pos:end]) for (pos, r), end in zip(found, ends, strict=True)]


def _status_from_text(text: str) -> str:
    found = _STATUS.search(text)
    return found.group(0) if found else ""


# ---------------------------------------------------------------------------------------------
# Rules. Each takes the parsed mail and returns a Hit when it decides, None to pass.


def rule_arf(mail: Mail) -> Hit | None:
    """RFC 5965 abuse report (or an older feedback loop forwarding the message): the
    complained-about address must be suppressed. Not a bounce and not a reply, so `other`."""
    reports = mail.feedback_reports
    if mail.report_type != "feedback-report" and not reports:
        loop = _FEEDBACK_SUBJECT.search(mail.subject) and not is_reply_subject(mail.subject)
        if not (loop and mail.original_headers):
            return None
    recipients: list[str] = []
    for part in reports:
        body = part.get_payload()
        if isinstance(body, list):  # compat32 splits the report into header blocks
            blocks = [b for b in body if isinstance(b, Message)]
            recipients += [str(v) for b in blocks for v in b.get_all("Original-Rcpt-To") or ()]
        else:
            text = payload_text(part)
            recipients += re.findall(r"^original-rcpt-to:\s*(.+)$", text, re.I | re.M)
    if not any(recipients):  # no Original-Rcpt-To: whom the reported message was sent to
        for original in mail.original_headers:
            recipients += addresses(header(original, "To"))
    found = (bare_address(r) for r in recipients)
    return Hit(Verdict.OTHER, recipients=tuple(dict.fromkeys(r for r in found if r)))


def rule_dsn(mail: Mail) -> Hit | None:
    """RFC 3464 report: per-recipient Action/Status/Diagnostic-Code are exact evidence."""
    if not mail.dsn:
        return None
    actions = [(_action(r), r) for r in mail.dsn]
    failed = [r for action, r in actions if action == "failed"]
    delayed = [r for action, r in actions if action == "delayed"]
    if not failed and not delayed:
        if any(action == "delivered" for action, _ in actions):
            return Hit(Verdict.OTHER, name="dsn_success")  # delivered / relayed / expanded
        return None
    if not failed:
        recipients = tuple(dict.fromkeys(r.address for r in delayed if r.address))
        return Hit(
            Verdict.BOUNCE, kind="delay", hard=False, recipients=recipients, also=("delayed",)
        )
    failures = [(r.address, *reason(r.diagnostic, mail.report_text, r.status)) for r in failed]
    if not any(address for address, _, _ in failures):
        temporary, permanent = _flufl(mail.msg)
        found = _not_ours(mail, sorted(permanent | temporary) + _text_recipients(mail))
        failures = [(a, kind, hard) for a in found or ("",) for _, kind, hard in failures]
    return _bounce(failures)


def rule_ses(mail: Mail) -> Hit | None:
    """Amazon SES notifications forwarded by SNS e-mail: JSON, not MIME, but exact evidence."""
    kind = _SES_TYPE.search(mail.text)
    if not kind:
        return None
    body = mail.text.replace("!\n ", "")
    if kind.group(1) == "Delivery":
        return Hit(Verdict.OTHER, name="dsn_success")
    if kind.group(1) == "Complaint":
        found = _SES_COMPLAINED.search(body)
        complained = ADDR.findall(found.group(1)) if found else []
        return Hit(
            Verdict.OTHER,
            recipients=tuple(dict.fromkeys(a.lower() for a in complained)),
            name="arf_complaint",
        )
    transient = bool(re.search(r'"bounceType"\s*:\s*"Transient"', body))
    failures: list[tuple[str, str, bool]] = []
    for item in _SES_RECIPIENT.finditer(body):
        fields = dict(re.findall(r'"(\w+)"\s*:\s*"([^"]*)"', item.group(0)))
        kind_, hard = reason(fields.get("diagnosticCode", ""), "", fields.get("status", ""))
        address = bare_address(fields.get("emailAddress", ""))
        failures.append((address, kind_, hard and not transient))
    return _bounce(failures or [("", "other", False)])


def rule_bounce_text(mail: Mail) -> Hit | None:
    """Non-standard bounces: a daemon sender or bounce subject, and failure text or addresses."""
    daemon = _from_daemon(mail)
    subject = bool(_BOUNCE_SUBJECT.search(mail.subject_lowered))
    if not (daemon or subject):
        return None
    report = mail.report_lowered
    body = bool(_BOUNCE_BODY.search(report) or _HARD.search(report))
    # flufl.bounce (about 0.65 ms a message) only where its answer decides something: the
    # verdict below, or the recipients when the explanation names none we can read.
    flufl: tuple[set[str], set[str]] | None = None
    if subject and is_reply_subject(mail.subject):
        # "Re: Undeliverable" is usually a person talking about a bounce; believe the
        # subject only when the text and flufl.bounce both find a failure too.
        if body:
            flufl = _flufl(mail.msg)
        subject = body and bool(flufl and (flufl[0] or flufl[1]))
    if not (daemon or subject):
        return None
    if not (daemon and subject) and not body:
        if flufl is None:
            flufl = _flufl(mail.msg)
        if not (flufl[0] or flufl[1]):
            return None
    recipients = _not_ours(mail, _text_recipients(mail))
    if flufl is not None or not recipients:
        temporary, permanent = flufl if flufl is not None else _flufl(mail.msg)
        recipients = _not_ours(
            mail, sorted(permanent) + sorted(temporary - permanent) + _text_recipients(mail)
        )
    recipients = recipients or _original_to(mail)
    delay = bool(_DELAY_BODY.search(report)) or (
        bool(_DELAY_SUBJECT.search(mail.subject))
        and not re.search(r"fail|undeliver|returned", mail.subject, re.I)
    )
    if delay:
        return Hit(
            Verdict.BOUNCE, kind="delay", hard=False, recipients=recipients, also=("delayed",)
        )
    failures = [
        (address, *reason("", part, _status_from_text(part)))
        for address, part in _segments(mail.report_text, recipients)
    ]
    return _bounce(failures)
