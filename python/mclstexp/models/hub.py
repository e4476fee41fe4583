"""Published weights through timm and ``huggingface_hub``, and errors a person can act on.

``weights="pretrained"`` creates the model with ``timm.create_model(..., pretrained=True)``:
timm reads the repository's ``config.json`` and weights through ``huggingface_hub``, which
downloads them once into the standard Hugging Face cache and honours ``HF_HOME`` /
``HF_HUB_CACHE`` (where), ``HF_HUB_OFFLINE=1`` (cache only, never the network) and ``HF_TOKEN``
or a ``hf auth login`` token (gated models). ``huggingface_hub`` reads these variables when it is
first imported.

Every failure on that path (a gated model without access, no token, offline with nothing cached,
an unknown repository, weights whose tensors do not fit the architecture) becomes one
:class:`mclstexp.WeightsError` whose message names the hub id and its model page (where access
is requested), ``HF_TOKEN`` / ``hf auth login``, the cache folder and the ``weights=PATH``
alternative (:func:`weights_error`).

Examples
--------
>>> "HF_TOKEN" in str(weights_error("a test", label="uni", hub_id="MahmoodLab/UNI"))
True
"""

from __future__ import annotations

from typing import Any

from mclstexp.exceptions import WeightsError

__all__ = ["cache_folder", "create_timm_model", "hub_id_of", "weights_error"]


def cache_folder() -> str:
    """The Hugging Face hub cache in use (``HF_HUB_CACHE``, else ``$HF_HOME/hub``).

    Examples
    --------
    >>> isinstance(cache_folder(), str)
    True
    """
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _token_found() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # a broken token file must not hide the real error
        return False


def weights_error(
    reason: str, *, label: str, hub_id: str | None, architecture: str | None = None
) -> WeightsError:
    """A :class:`~mclstexp.WeightsError` for ``label`` saying ``reason`` and what to do.

    Parameters
    ----------
    reason
        What went wrong, one sentence.
    label
        The encoder as the user named it (registry name, timm name or ``hf-hub:`` id).
    hub_id
        Its Hugging Face repository, when known.
    architecture
        The timm architecture a local ``weights=PATH`` file must match.

    Examples
    --------
    >>> err = weights_error("no access", label="uni", hub_id="MahmoodLab/UNI")
    >>> "https://huggingface.co/MahmoodLab/UNI" in str(err)
    True
    """
    from huggingface_hub import constants

    where = f" (hub id {hub_id})" if hub_id else ""
    token = "a token was found" if _token_found() else "no token was found"
    offline = " HF_HUB_OFFLINE is set: only the cache is read." if constants.HF_HUB_OFFLINE else ""
    lines = [f"cannot load the pretrained weights of {label!r}{where}: {reason}"]
    if hub_id:
        lines.append(
            f"- model page (card, licence, access request): https://huggingface.co/{hub_id}"
        )
    lines += [
        f"- gated models need an account that was granted access and its token ({token}): "
        "set HF_TOKEN=hf_... or run `hf auth login`; a fine-grained token also needs 'read "
        "access to contents of all public gated repos you can access'",
        f"- cache folder: {cache_folder()} (set by HF_HOME or HF_HUB_CACHE).{offline} "
        "Without network, download once where there is some"
        + (f" (`hf download {hub_id}`)" if hub_id else "")
        + " and copy the cache, then set HF_HUB_OFFLINE=1",
        "- or use a local copy: ModelConfig.weights=PATH (--weights PATH), a safetensors file "
        "or torch state dict" + (f" of timm architecture {architecture!r}" if architecture else ""),
    ]
    return WeightsError("\n".join(lines))


def _reason(exc: BaseException) -> str | None:
    """One sentence for a hub or loading error, or ``None`` when ``exc`` is none of those."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return (
            "the model is gated and this account has no access to it yet (request access on "
            "the model page and log in with the account that was approved)"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "the repository does not exist or is not visible without a token"
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return "the weights are not in the local cache and the hub cannot be reached (offline)"
    if isinstance(exc, errors.EntryNotFoundError):
        return "the repository has no weights file timm can read (model.safetensors or " + (
            "pytorch_model.bin)"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        return f"the hub refused the request ({exc})"
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in (
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
    ):
        return "the hub cannot be reached (no network?) and nothing usable is cached"
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("size mismatch" in text or "state_dict" in text):
        detail = " ".join(line.strip() for line in text.splitlines() if line.strip())
        return (
            "the published weights do not match the architecture built here (another timm "
            f"version or other keyword arguments?): {detail[:400]}"
            + (" ..." if len(detail) > 400 else "")
        )
    if isinstance(exc, RuntimeError) and ("No pretrained weights" in text or "Unknown" in text):
        return f"timm has no such pretrained model: {text.splitlines()[0]}"
    return None


def hub_id_of(name: str) -> str | None:
    """The hub repository timm would download ``name``'s weights from, when known.

    Examples
    --------
    >>> hub_id_of("hf-hub:org/model")
    'org/model'
    """
    for prefix in ("hf-hub:", "hf_hub:"):
        if name.startswith(prefix):
            return name[len(prefix) :].split("@")[0]
    try:
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unknown name: the caller reports it
        return None
    return getattr(cfg, "hf_hub_id", None) or None


def create_timm_model(
    name: str,
    *,
    pretrained: bool,
    label: str | None = None,
    architecture: str | None = None,
    **kwargs: Any,
) -> Any:
    """``timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)`` with every
    hub or weight-loading failure raised as :class:`~mclstexp.WeightsError` (see
    :func:`weights_error`); other errors pass through unchanged.

    Examples
    --------
    >>> create_timm_model("test_resnet", pretrained=False).num_features > 0
    True
    """
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except Exception as exc:
        reason = _reason(exc)
        if reason is None:
            raise
        raise weights_error(
            reason, label=label or name, hub_id=hub_id_of(name), architecture=architecture
        ) from exc
