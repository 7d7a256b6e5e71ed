"""hlrm: collaborative metric learning recommenders with latent relations."""

from hlrm.threads import set_thread_defaults

# Before any hlrm module imports torch: its OpenMP runtime reads the settings once, at import.
set_thread_defaults()

__version__ = "0.1.0"


#: The estimator API (:mod:`hlrm.estimator`), imported on first use so that ``import hlrm`` (and
#: the command line's start) does not load torch.
_ESTIMATOR_NAMES = frozenset(
    {
        "Estimator",
        "load",
        "CML",
        "LRML",
        "HLR",
        "HLRPlusPlus",
        "CMLEASE",
        "HLREASE",
        "HLRPlusPlusEASE",
        "TransCF",
        "AdaCML",
        "BPR",
        "ALS",
        "ItemKNN",
        "EASE",
        "Popularity",
    }
)


def __getattr__(name: str) -> object:
    if name in _ESTIMATOR_NAMES:
        from hlrm import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'hlrm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ESTIMATOR_NAMES})
