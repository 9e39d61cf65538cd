"""Errors from Meta's Graph / WhatsApp Cloud API, classified once.

    ParloError
    └── MetaApiError              anything the Cloud API (or the wire to it) answered
        ├── MetaNetworkError       no answer: timeout, refused connection, broken stream (retryable)
        ├── TemporarilyUnavailable Meta is down or overloaded: 1, 2, 131000, 131016, 133004, 5xx (retryable)
        ├── RateLimited            a throughput limit was hit: 4, 80007, 130429, 131056, HTTP 429 (retryable)
        ├── OutsideServiceWindow   more than 24 hours since the customer last wrote: 131047, 470
        ├── Undeliverable          the recipient cannot get this message: 131026, 131049, 131050, …
        ├── TemplateError          the template is missing, paused, disabled or its parameters are wrong
        ├── MediaError             Meta could not fetch/handle the media
        │   └── MediaTooLarge      our own cap on a download was exceeded
        ├── AuthError              the access token is expired or invalid: 0, 190
        ├── AccessDenied           the token lacks a permission: 3, 10, 200-299, 131005
        ├── InvalidRequest         our payload is wrong: 100, 131008, 131009, 131021, 131051, …
        ├── PolicyBlocked          the account is restricted for policy or quality reasons: 368, 131031, …
        ├── AccountError           business account, billing or phone-number registration problems
        └── UnexpectedResponse     a 2xx answer we cannot read

Which class and whether trying again can help are decided here, from one table (``ERROR_TABLE``);
the outbox reads ``retryable`` and shows ``reason_it``/``reason_en`` to the agent. Codes Meta adds
later fall back by HTTP status (5xx/429 retryable, other 4xx permanent) and keep the raw body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ParloError

RAW_BODY_LIMIT = 4000


class MetaApiError(ParloError):
    """An error answered by (or on the way to) the Cloud API. ``retryable`` is per instance;
    ``ambiguous`` says the request may have been carried out although no answer came back."""

    ambiguous: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        title: str | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        error_type: str | None = None,
        retryable: bool | None = None,
        reason_en: str = "",
        reason_it: str = "",
        raw_body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.title = title
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.error_type = error_type
        # the class default says what the group usually means; the table may say otherwise per code
        self.retryable = type(self).retryable if retryable is None else retryable
        self.reason_en = reason_en or message
        self.reason_it = reason_it or message
        self.raw_body = raw_body
        self.retry_after = retry_after

    def reason(self, language: str = "it") -> str:
        """The reason to show an agent, Italian first."""
        return self.reason_en if language.lower().startswith("en") else self.reason_it

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code!r}, subcode={self.subcode!r}, "
                f"http_status={self.http_status!r}, retryable={self.retryable!r}, title={self.title!r})")


class MetaNetworkError(MetaApiError):
    retryable = True


class TemporarilyUnavailable(MetaApiError):
    retryable = True


class RateLimited(MetaApiError):
    retryable = True


class OutsideServiceWindow(MetaApiError):
    pass


class Undeliverable(MetaApiError):
    pass


class TemplateError(MetaApiError):
    pass


class MediaError(MetaApiError):
    pass


class MediaTooLarge(MediaError):
    pass


class AuthError(MetaApiError):
    pass


class AccessDenied(MetaApiError):
    pass


class InvalidRequest(MetaApiError):
    pass


class PolicyBlocked(MetaApiError):
    pass


class AccountError(MetaApiError):
    pass


class UnexpectedResponse(MetaApiError):
    pass


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    cls: type[MetaApiError]
    retryable: bool
    reason_en: str
    reason_it: str


def _rows(*rows: tuple[Iterable[int], type[MetaApiError], bool, str, str]) -> dict[int, ErrorSpec]:
    table: dict[int, ErrorSpec] = {}
    for codes, cls, retryable, en, it in rows:
        for code in codes:
            if code in table:
                raise ValueError(f"Meta error code {code} appears twice in the table")
            table[code] = ErrorSpec(cls, retryable, en, it)
    return table


# Meaning and advice after Meta's "Cloud API error codes" page; the wording is ours and is shown to
# agents, so it says what happened and what to do rather than echoing Meta's titles.
ERROR_TABLE: Mapping[int, ErrorSpec] = _rows(
    # --- Meta is down or hiccuping: try again later
    ((1,), TemporarilyUnavailable, True,
     "WhatsApp returned an unknown error, possibly a temporary server problem. Sending will be retried.",
     "WhatsApp ha restituito un errore sconosciuto, forse un problema temporaneo del server. L'invio verrà ritentato."),
    ((2,), TemporarilyUnavailable, True,
     "The WhatsApp API is temporarily unavailable or overloaded. Sending will be retried.",
     "L'API di WhatsApp è temporaneamente non disponibile o sovraccarica. L'invio verrà ritentato."),
    ((131000,), TemporarilyUnavailable, True,
     "WhatsApp could not send the message because of an unknown error. Sending will be retried.",
     "WhatsApp non è riuscito a inviare il messaggio per un errore sconosciuto. L'invio verrà ritentato."),
    ((131016,), TemporarilyUnavailable, True,
     "A WhatsApp service is temporarily unavailable. Sending will be retried.",
     "Un servizio di WhatsApp è temporaneamente non disponibile. L'invio verrà ritentato."),
    ((133004,), TemporarilyUnavailable, True,
     "The WhatsApp server is temporarily unavailable. Sending will be retried.",
     "Il server di WhatsApp è temporaneamente non disponibile. L'invio verrà ritentato."),
    ((131057,), TemporarilyUnavailable, True,
     "The WhatsApp Business account is in maintenance mode (for example during a throughput upgrade). "
     "Sending will be retried.",
     "L'account WhatsApp Business è in manutenzione (per esempio durante un aumento di capacità). "
     "L'invio verrà ritentato."),
    # --- throughput limits: slow down and try again
    ((4,), RateLimited, True,
     "Too many calls to the WhatsApp API from this app. Sending will be retried after a pause.",
     "Troppe chiamate all'API di WhatsApp da questa app. L'invio verrà ritentato dopo una pausa."),
    ((80007,), RateLimited, True,
     "The WhatsApp Business account has reached its rate limit. Sending will be retried after a pause.",
     "L'account WhatsApp Business ha raggiunto il limite di richieste. L'invio verrà ritentato dopo una pausa."),
    ((130429,), RateLimited, True,
     "The message throughput limit of this number has been reached. Sending will be retried after a pause.",
     "È stato raggiunto il limite di messaggi al secondo di questo numero. L'invio verrà ritentato dopo una pausa."),
    ((131056,), RateLimited, True,
     "Too many messages to this customer in a short time. Sending will be retried after a pause.",
     "Troppi messaggi a questo cliente in poco tempo. L'invio verrà ritentato dopo una pausa."),
    # --- the 24-hour customer service window
    ((131047,), OutsideServiceWindow, False,
     "More than 24 hours have passed since the customer last wrote: only an approved template can be sent now.",
     "Sono passate più di 24 ore dall'ultimo messaggio del cliente: ora si può inviare solo un modello approvato."),
    ((470,), OutsideServiceWindow, False,
     "More than 24 hours have passed since the customer last wrote: only an approved template can be sent now.",
     "Sono passate più di 24 ore dall'ultimo messaggio del cliente: ora si può inviare solo un modello approvato."),
    # --- the recipient cannot get it
    ((131026,), Undeliverable, False,
     "The message could not be delivered: the number may not be on WhatsApp, or the customer has not accepted "
     "WhatsApp's terms or uses an outdated app.",
     "Il messaggio non può essere consegnato: il numero potrebbe non essere su WhatsApp, oppure il cliente non ha "
     "accettato i termini di WhatsApp o usa un'app non aggiornata."),
    ((131049,), Undeliverable, False,
     "WhatsApp chose not to deliver this message to protect user engagement (too many marketing messages to this "
     "customer). Do not resend it right away.",
     "WhatsApp ha scelto di non consegnare il messaggio per tutelare l'esperienza degli utenti (troppi messaggi di "
     "marketing a questo cliente). Non reinviarlo subito."),
    ((131050,), Undeliverable, False,
     "The customer has stopped marketing messages from this business.",
     "Il cliente ha disattivato i messaggi di marketing di questa azienda."),
    ((130472,), Undeliverable, False,
     "The customer is part of a WhatsApp marketing experiment group and did not receive this message.",
     "Il cliente fa parte di un gruppo sperimentale di WhatsApp e non ha ricevuto questo messaggio."),
    ((131030,), Undeliverable, False,
     "The recipient is not in the allowed list of this test number.",
     "Il destinatario non è nell'elenco dei numeri consentiti di questo numero di prova."),
    # --- templates
    ((132000,), TemplateError, False,
     "The number of template parameters does not match the template.",
     "Il numero di parametri non corrisponde a quello del modello."),
    ((132001,), TemplateError, False,
     "The template does not exist in this language or is not approved.",
     "Il modello non esiste in questa lingua o non è stato approvato."),
    ((132005,), TemplateError, False,
     "The template text is too long once its parameters are filled in.",
     "Il testo del modello è troppo lungo con i parametri inseriti."),
    ((132007,), TemplateError, False,
     "The template content violates a WhatsApp policy.",
     "Il contenuto del modello viola una policy di WhatsApp."),
    ((132008,), TemplateError, False,
     "A template parameter value is invalid.",
     "Il valore di un parametro del modello non è valido."),
    ((132012,), TemplateError, False,
     "A template parameter has the wrong format for the template.",
     "Un parametro del modello ha un formato non corretto."),
    ((132015,), TemplateError, False,
     "The template is paused because of low quality.",
     "Il modello è in pausa per bassa qualità."),
    ((132016,), TemplateError, False,
     "The template has been paused too many times and is now permanently disabled.",
     "Il modello è stato messo in pausa troppe volte ed è ora disattivato definitivamente."),
    ((132068,), TemplateError, False,
     "The WhatsApp Flow in this message is blocked.",
     "Il Flow WhatsApp di questo messaggio è bloccato."),
    ((132069,), TemplateError, False,
     "The WhatsApp Flow in this message is throttled (too many sends in the last hour).",
     "Il Flow WhatsApp di questo messaggio è limitato (troppi invii nell'ultima ora)."),
    # --- media
    ((131052,), MediaError, False,
     "WhatsApp could not download the media the customer sent.",
     "WhatsApp non è riuscito a scaricare il file inviato dal cliente."),
    ((131053,), MediaError, False,
     "WhatsApp could not upload or fetch the media of this message (unsupported type, too large or unreachable link).",
     "WhatsApp non è riuscito a caricare il file di questo messaggio (tipo non supportato, troppo grande o link "
     "non raggiungibile)."),
    # --- token and permissions
    ((0,), AuthError, False,
     "WhatsApp could not authenticate this app: the access token must be renewed.",
     "WhatsApp non è riuscito ad autenticare l'app: il token di accesso va rinnovato."),
    ((190,), AuthError, False,
     "The WhatsApp access token has expired or is invalid: it must be renewed.",
     "Il token di accesso a WhatsApp è scaduto o non valido: va rinnovato."),
    ((3,), AccessDenied, False,
     "The app lacks the capability or permission for this WhatsApp operation.",
     "L'app non ha la capacità o il permesso per questa operazione WhatsApp."),
    ((10, 131005, *range(200, 300)), AccessDenied, False,
     "The access token lacks a required permission, or it was revoked.",
     "Il token di accesso non ha un permesso necessario, oppure è stato revocato."),
    # --- our request is wrong
    ((100,), InvalidRequest, False,
     "WhatsApp rejected a parameter of the request (unsupported, misspelled or invalid value).",
     "WhatsApp ha rifiutato un parametro della richiesta (non supportato, scritto male o con valore non valido)."),
    ((131008,), InvalidRequest, False,
     "A required parameter is missing from the request.",
     "Manca un parametro obbligatorio nella richiesta."),
    ((131009,), InvalidRequest, False,
     "A parameter value is invalid (for example the phone number or the message id).",
     "Il valore di un parametro non è valido (per esempio il numero di telefono o l'id del messaggio)."),
    ((131021,), InvalidRequest, False,
     "The recipient is the same number as the sender.",
     "Il destinatario è lo stesso numero del mittente."),
    ((131051,), InvalidRequest, False,
     "This message type is not supported by WhatsApp.",
     "Questo tipo di messaggio non è supportato da WhatsApp."),
    ((131062,), InvalidRequest, False,
     "This message cannot be sent to a customer known only by their WhatsApp username (it needs their phone "
     "number, as one-time-code templates do).",
     "Questo messaggio non può essere inviato a un cliente noto solo per il suo nome utente WhatsApp (serve il "
     "numero di telefono, come per i modelli con codice monouso)."),
    ((135000,), InvalidRequest, False,
     "WhatsApp could not send the message because of an unknown problem with the request parameters.",
     "WhatsApp non ha inviato il messaggio per un problema sconosciuto nei parametri della richiesta."),
    # --- policy and quality restrictions
    ((368,), PolicyBlocked, False,
     "The WhatsApp Business account is temporarily blocked for policy violations.",
     "L'account WhatsApp Business è temporaneamente bloccato per violazione delle policy."),
    ((131031,), PolicyBlocked, False,
     "The WhatsApp Business account is locked (policy violation, or data such as the two-step PIN did not match).",
     "L'account WhatsApp Business è bloccato (violazione delle policy, o dati come il PIN di verifica non "
     "corrispondono)."),
    ((130497,), PolicyBlocked, False,
     "The WhatsApp Business account may not message customers in this country.",
     "L'account WhatsApp Business non può scrivere ai clienti di questo paese."),
    ((131048,), PolicyBlocked, False,
     "This number is restricted because too many earlier messages were blocked or flagged as spam. "
     "Check its quality rating in WhatsApp Manager.",
     "Questo numero è limitato perché troppi messaggi precedenti sono stati bloccati o segnalati come spam. "
     "Controlla la sua valutazione di qualità in WhatsApp Manager."),
    # --- business account, billing, registration of the sending number
    ((131042,), AccountError, False,
     "There is a problem with the payment method of the WhatsApp Business account.",
     "C'è un problema con il metodo di pagamento dell'account WhatsApp Business."),
    ((131045,), AccountError, False,
     "The sending phone number is not registered (or its certificate is wrong) on the WhatsApp Business Platform.",
     "Il numero mittente non è registrato (o il suo certificato è errato) sulla piattaforma WhatsApp Business."),
    ((131037,), AccountError, False,
     "The display name of the sending number has not been approved yet.",
     "Il nome visualizzato del numero mittente non è ancora stato approvato."),
    ((133000, 133005, 133006, 133008, 133009, 133010, 133015, 133016), AccountError, False,
     "The sending phone number has a registration problem (not registered, being re-registered or wrong PIN).",
     "Il numero mittente ha un problema di registrazione (non registrato, in fase di nuova registrazione o PIN "
     "errato)."),
)


@dataclass(frozen=True, slots=True)
class _Fallback:
    cls: type[MetaApiError]
    retryable: bool
    reason_en: str
    reason_it: str


_NETWORK = _Fallback(
    MetaNetworkError, True,
    "WhatsApp could not be reached (network error or timeout). Sending will be retried.",
    "Impossibile raggiungere WhatsApp (errore di rete o timeout). L'invio verrà ritentato.")
_SERVER = _Fallback(
    TemporarilyUnavailable, True,
    "WhatsApp answered with a server error. Sending will be retried.",
    "WhatsApp ha risposto con un errore del server. L'invio verrà ritentato.")
_TOO_MANY = _Fallback(
    RateLimited, True,
    "WhatsApp asked to slow down (too many requests). Sending will be retried after a pause.",
    "WhatsApp ha chiesto di rallentare (troppe richieste). L'invio verrà ritentato dopo una pausa.")
_TRANSIENT = _Fallback(
    MetaApiError, True,
    "WhatsApp reported a temporary error. Sending will be retried.",
    "WhatsApp ha segnalato un errore temporaneo. L'invio verrà ritentato.")
_REJECTED = _Fallback(
    MetaApiError, False,
    "WhatsApp rejected the request with an error Parlo does not know yet.",
    "WhatsApp ha rifiutato la richiesta con un errore che Parlo non conosce ancora.")

# Unknown codes (or no readable code at all) are classified by HTTP status alone.
STATUS_FALLBACK: Mapping[int, _Fallback] = {
    401: _Fallback(AuthError, False, ERROR_TABLE[190].reason_en, ERROR_TABLE[190].reason_it),
    403: _Fallback(AccessDenied, False, ERROR_TABLE[10].reason_en, ERROR_TABLE[10].reason_it),
    408: _SERVER,
    429: _TOO_MANY,
}


def lookup(code: int) -> ErrorSpec | None:
    return ERROR_TABLE.get(code)


def _fallback(http_status: int | None, is_transient: bool) -> _Fallback:
    if http_status is not None:
        if http_status in STATUS_FALLBACK:
            return STATUS_FALLBACK[http_status]
        if http_status >= 500:
            return _SERVER
    return _TRANSIENT if is_transient else _REJECTED


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _strip_code_prefix(message: str | None) -> str | None:
    # Meta's message reads "(#131047) Re-engagement message"; the title is what follows the code
    if message and message.startswith("(#") and ") " in message:
        return message.split(") ", 1)[1] or None
    return message


def error_from_payload(
    error: Mapping[str, Any],
    *,
    http_status: int | None = None,
    raw_body: str | None = None,
    retry_after: float | None = None,
) -> MetaApiError:
    """The exception for one Meta error object: ``{"code", "message", "error_data": {"details"}, …}``.

    Also fits the ``errors[]`` entries of failed-status webhooks, which have the same shape.
    """
    code = _as_int(error.get("code"))
    subcode = _as_int(error.get("error_subcode"))
    message = _as_str(error.get("message"))
    title = _as_str(error.get("title")) or _as_str(error.get("error_user_title")) or _strip_code_prefix(message)
    error_data = error.get("error_data")
    details = _as_str(error_data.get("details")) if isinstance(error_data, Mapping) else _as_str(error_data)
    details = details or _as_str(error.get("error_user_msg"))
    spec = lookup(code) if code is not None else None
    chosen: ErrorSpec | _Fallback = spec if spec is not None else _fallback(http_status, error.get("is_transient") is True)
    summary = f"Meta error {code if code is not None else '?'}"
    if title:
        summary += f" ({title})"
    if details and details != title:
        summary += f": {details}"
    if http_status is not None:
        summary += f" [HTTP {http_status}]"
    return chosen.cls(
        summary,
        code=code,
        subcode=subcode,
        http_status=http_status,
        title=title,
        details=details,
        fbtrace_id=_as_str(error.get("fbtrace_id")),
        error_type=_as_str(error.get("type")),
        retryable=chosen.retryable,
        reason_en=chosen.reason_en,
        reason_it=chosen.reason_it,
        raw_body=raw_body,
        retry_after=retry_after,
    )


def error_from_response(
    http_status: int,
    body: bytes | str | Mapping[str, Any] | None,
    *,
    retry_after: float | None = None,
    secrets: Iterable[str] = (),
) -> MetaApiError:
    """The exception for a non-2xx Graph API answer; never raises, whatever the body holds.

    ``secrets`` (the access token) are cut out of the body before anything is kept from it.
    """
    secrets = tuple(secrets)
    raw: str | None
    parsed: object
    if body is None:
        raw, parsed = None, None
    elif isinstance(body, Mapping):
        raw = _scrub(json.dumps(body, default=str, ensure_ascii=False), secrets)
        parsed = json.loads(raw)
    else:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        raw = _scrub(text, secrets)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
    if raw is not None and len(raw) > RAW_BODY_LIMIT:
        raw = raw[:RAW_BODY_LIMIT] + "…"
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        return error_from_payload(error, http_status=http_status, raw_body=raw, retry_after=retry_after)
    chosen = _fallback(http_status, False)
    return chosen.cls(
        f"Meta answered HTTP {http_status} without a readable error",
        http_status=http_status,
        retryable=chosen.retryable,
        reason_en=chosen.reason_en,
        reason_it=chosen.reason_it,
        raw_body=raw,
        retry_after=retry_after,
    )


def network_error(description: str, *, secrets: Iterable[str] = ()) -> MetaNetworkError:
    """A transport failure (timeout, connection refused, stream cut) as a retryable Meta error."""
    return MetaNetworkError(
        _scrub(f"WhatsApp could not be reached: {description}", tuple(secrets)),
        retryable=True,
        reason_en=_NETWORK.reason_en,
        reason_it=_NETWORK.reason_it,
    )
