"""HLR and HLR++: Hierarchical Latent Relation modelling (Tran et al., RecSys 2021), spec 3.5-3.6.

HLR builds item-item relations ``LRAM(t, x_j)`` between the target t and each item of the user's
history pool, plus the direct user-item relation ``LRAM(t, u)`` in slot 0; a user attention module
(weights ``⟨r_j, u⟩`` over the valid slots) mixes them into one translation R and
``d(u, t) = ||u + R - t||²``.

HLR++ (official ``jpte``, "JUPITER") keeps the user attention over item-item relations, without
the user slot, and adds an item attention module over user-item relations ``LRAM(u, y_j)`` of the
pool ``[t; x_1..x_P]`` weighted by ``⟨·, t⟩``; the translation is the sum of both modules.

Pools come with the batch (:class:`~hlrm.models.base.History`): training pools exclude the
positive, scoring pools are train ∪ valid items (spec 4.4). One memory (K, M) serves every relation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hlrm.models.base import History, register
from hlrm.models.memory import (
    CoefficientBounds,
    Explanation,
    Label,
    MemoryTranslationModel,
    RelationMemory,
    admit_first_padding,
    effects_by_item,
    key_norms,
    masked_attention,
    pool_effects,
    ranked,
    require_history,
    softmax_floor,
)
from hlrm.models.relation_scoring import RelationProblem, score_relations


def user_attention(
    lram: RelationMemory, user: Tensor, pool: Tensor, mask: Tensor, targets: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """User attention over the relations ``LRAM(t, z_j)`` (spec 3.5 steps 2-4).

    ``user`` (B, d), ``pool`` (B, S, d), ``mask`` (B, S), ``targets`` (B, T, d). Returns the
    translations (B, T, d) and the attention weights (B, T, S). Computed as in spec 9 with the
    roles swapped (a row has few targets but many pool slots): the targets absorb the keys,
    ``((t ⊙ z) K)_n = z · (t ⊙ K_n)``, so the slot logits are one batched GEMM, and with
    ``r = a M`` the attention logits are ``a · (M u)`` and the translation ``(Σ_j α_j a_j) M``;
    no (B, T, S, d) tensor is built, which halves the cost of a training step.
    """
    n_rows, n_targets, dim = targets.shape
    keys = lram.scaled_keys
    # built directly in the (B, d, T, N) layout the GEMM reads: no transposed copy
    target_keys = (targets.transpose(1, 2).unsqueeze(-1) * keys.unsqueeze(1)).reshape(
        n_rows, dim, -1
    )
    logits = (pool @ target_keys).view(n_rows, pool.shape[1], n_targets, lram.n_slots)
    addresses = logits.transpose(1, 2).softmax(-1)  # (B, T, S, N)
    query = lram.attention_logits(user @ lram.memory.T).view(n_rows, 1, -1, 1)
    weights = masked_attention((addresses @ query).squeeze(-1), mask.unsqueeze(1), beta)
    return (weights.unsqueeze(-2) @ addresses).squeeze(-2) @ lram.memory, weights


@register("hlre")
class HLR(MemoryTranslationModel):
    """HLR.

    ``history_size`` (P) and ``history_sampling`` ("random" | "unpop") define the pools drawn by
    the trainer and the evaluator (spec 4.4); ``copy``: negatives reuse the positive's
    translation; ``beta``: exponent of the attention denominator (spec 3.5, 1 everywhere in the
    official configs); ``clip``: see :data:`~hlrm.models.memory.CLIP_MODES`.

    Extensions (defaults = the published model): ``memory_init`` (``"zero"`` starts at the zero
    translation, for warm starts from CML), ``address_scale`` / ``attention_scale`` /
    ``learn_scales``: logit scales of :class:`~hlrm.models.memory.RelationMemory`.
    """

    name = "hlr"
    uses_history = True
    #: Default: a CML first, then HLR from its embeddings with a zero memory (so it starts
    #: exactly at that CML) at a small learning rate, selected on validation NDCG@10 — the HLR
    #: authors' warm start. From scratch the softmax recipe needs about 100 relation epochs, hours
    #: on 2 CPU cores, and ended below CML; warm-started HLR matches CML (docs/results.md).
    train_recipe = {**MemoryTranslationModel.train_recipe, "pretrain": "cml"}
    pretrained_recipe = {
        "lr": 2e-4,
        "epochs": 15,
        "patience": 5,
        "negatives": 10,
        "keep_start": True,
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        n_slots: int = 20,
        max_norm: float = 1.0,
        history_size: int = 50,
        history_sampling: str = "random",
        copy: bool = False,
        beta: float = 1.0,
        clip: str = "none",
        memory_init: str = "normal",
        address_scale: float = 1.0,
        attention_scale: float = 1.0,
        learn_scales: bool = False,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            dim,
            max_norm,
            copy,
            n_slots,
            clip,
            memory_init,
            address_scale,
            attention_scale,
            learn_scales,
        )
        self.history_size = history_size
        self.history_sampling = history_sampling
        self.beta = beta
        self.scoring_pool = 1 + history_size  # HLR: [u; x_1..x_P]; HLR++: x_1..x_P and the target

    def _pool(self, users: Tensor, history: History) -> tuple[Tensor, Tensor, Tensor]:
        """User vectors (U, d), the pool ``[u; x_1..x_P]`` (U, 1+P, d) and its mask (U, 1+P)."""
        user = self.rows(self.user_embeddings, users)
        pool = torch.cat([user.unsqueeze(1), self.history_vectors(history)], 1)
        mask = torch.cat([history.mask.new_ones(len(users), 1), history.mask], 1)
        return user, pool, mask

    def relation_problem(
        self, users: Tensor, history: History | None, items: Tensor | None = None
    ) -> RelationProblem:
        """What :meth:`score` computes, as the input of the scoring backends
        (:mod:`hlrm.models.relation_scoring`); ``items``: only these item indices."""
        user, pool, mask = self._pool(users, require_history(self, history))
        return self._problem("hlr", user, pool, mask, items)

    def _problem(
        self,
        kind: str,
        user: Tensor,
        pool: Tensor,
        mask: Tensor,
        items: Tensor | None,
        item_mask: Tensor | None = None,
    ) -> RelationProblem:
        """The problem of the users ``user`` with their user-attention ``pool`` / ``mask`` (and,
        for HLR++, the item attention's ``item_mask``)."""
        table = self.item_embeddings
        return RelationProblem(
            kind=kind,
            user=user,
            pool=pool,
            pool_mask=mask,
            keys=self.lram.scaled_keys,
            memory=self.lram.memory,
            attention_scale=self.lram.scales[1],
            beta=self.beta,
            items=table if items is None else table.index_select(0, items),
            item_norm=float(table.detach().norm(dim=1).max()) if len(table) else 0.0,
            item_mask=item_mask,
        )

    def chosen_tiles(self, users: Tensor, history: History | None) -> tuple[int, int]:
        """The (users, items) tile the plain scorer uses for calls like ``score(users,
        history)``: :attr:`scoring_tiles`, else measured for this machine and shape."""
        from hlrm.models.tiling import choose_tiles

        problem = self.relation_problem(users, history)
        return self.scoring_tiles or choose_tiles(problem, self.block_elements)

    def translations(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        user, pool, mask = self._pool(users, require_history(self, history))
        return user_attention(
            self.lram, user, pool, mask, self.rows(self.item_embeddings, targets), self.beta
        )[0]

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Exact factorised scoring (spec 9, :mod:`hlrm.models.relation_scoring`): per tile of
        users and items one GEMM gives the (I_t, U_t, 1+P, N) addresses, the attention logits
        are ``a · (M u)`` and the distance is a quadratic form in the mixed coefficients; never
        a (U, I, 1+P, d) tensor. ``items``: score only these item indices."""
        problem = self.relation_problem(users, history, items)
        return score_relations(
            problem, self.block_elements, self.scoring_backend, self.scoring_tiles
        )

    def coefficient_bounds(
        self, users: Tensor, history: History | None
    ) -> CoefficientBounds | None:
        """The user attention mixes the addresses of the valid pool slots (the user slot is always
        valid) with weights of sum 1 when β = 1; other β give no known mass."""
        if self.beta != 1.0:
            return None
        user, pool, mask = self._pool(users, require_history(self, history))
        pool_keys = key_norms(pool, self.lram.scaled_keys, mask)
        n_slots = self.lram.n_slots
        return CoefficientBounds(
            mass=user.new_ones(len(users)),
            floor=lambda items: softmax_floor(items.norm(dim=1, keepdim=True) * pool_keys, n_slots),
        )

    @torch.no_grad()
    def explain(self, user: int, items: Tensor, history: History) -> list[Explanation]:
        """The user attention over the pool for each item of ``items``; ``history`` is the user's
        pool (1, P). Slot 0 is labelled ``"user"``, history items by their internal index."""
        users = torch.tensor([user], device=items.device)
        vector, pool, mask = self._pool(users, history)
        targets = self.item_embeddings[items].unsqueeze(0)
        weights = user_attention(self.lram, vector, pool, mask, targets, self.beta)[1][0]
        labels: list[Label] = ["user", *history.items[0].tolist()]
        effects = effects_by_item(history, pool_effects(self, user, items, history))
        return [
            Explanation(int(item), {"user_attention": _valid_ranked(labels, row, mask[0])}, effect)
            for item, row, effect in zip(items.tolist(), weights, effects, strict=True)
        ]


@register("hlrpp", "jupiter", "jpte")
class HLRPlusPlus(HLR):
    """HLR++. Options of :class:`HLR`, plus ``padding_quirk``: reproduce the official user
    attention mask, which admits one padded slot (relation = mean of the memory slots, since its
    key is 0) whenever the user has fewer than P pool items, in training and scoring (spec 3.6)."""

    name = "hlr++"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        n_slots: int = 20,
        max_norm: float = 1.0,
        history_size: int = 50,
        history_sampling: str = "random",
        copy: bool = False,
        beta: float = 1.0,
        clip: str = "none",
        memory_init: str = "normal",
        address_scale: float = 1.0,
        attention_scale: float = 1.0,
        learn_scales: bool = False,
        padding_quirk: bool = False,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            dim=dim,
            n_slots=n_slots,
            max_norm=max_norm,
            history_size=history_size,
            history_sampling=history_sampling,
            copy=copy,
            beta=beta,
            clip=clip,
            memory_init=memory_init,
            address_scale=address_scale,
            attention_scale=attention_scale,
            learn_scales=learn_scales,
        )
        self.padding_quirk = padding_quirk

    def _user_mask(self, mask: Tensor) -> Tensor:
        return admit_first_padding(mask) if self.padding_quirk else mask

    def _item_attention(
        self, user: Tensor, prefs: Tensor, mask: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Item attention (spec 3.6): relations ``LRAM(u, y_j)`` of the pool ``[t; x_1..x_P]``
        weighted by ``⟨·, t⟩``. The history relations do not depend on t: computed once per row.
        Returns translations (B, T, d) and weights (B, T, 1+P)."""
        target_relations = self.lram.relation(user.unsqueeze(1), targets)
        history_relations = self.lram.relation(user.unsqueeze(1), prefs)
        logits = self.lram.attention_logits(
            torch.cat(
                [
                    (target_relations * targets).sum(-1, keepdim=True),
                    targets @ history_relations.transpose(1, 2),
                ],
                -1,
            )
        )
        full_mask = torch.cat([mask.new_ones(len(mask), 1), mask], 1)
        weights = masked_attention(logits, full_mask.unsqueeze(1), self.beta)
        translations = weights[..., :1] * target_relations + weights[..., 1:] @ history_relations
        return translations, weights

    def translations(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        history = require_history(self, history)
        user = self.rows(self.user_embeddings, users)
        prefs = self.history_vectors(history)
        target_vectors = self.rows(self.item_embeddings, targets)
        item_part = self._item_attention(user, prefs, history.mask, target_vectors)[0]
        user_part = user_attention(
            self.lram, user, prefs, self._user_mask(history.mask), target_vectors, self.beta
        )[0]
        return item_part + user_part

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Exact factorised scoring (spec 9): the user attention part as in :meth:`HLR.score`
        without the user slot; the item attention part needs per item only the target slot's
        addresses (one GEMM) and the logits ``a_j · (M i)`` of the item-independent history
        addresses (one GEMM) — no tiling. Both parts are coefficient vectors over the same
        memory, so the distance is one quadratic form in their sum. ``items``: score only these
        item indices."""
        problem = self.relation_problem(users, history, items)
        return score_relations(
            problem, self.block_elements, self.scoring_backend, self.scoring_tiles
        )

    def relation_problem(
        self, users: Tensor, history: History | None, items: Tensor | None = None
    ) -> RelationProblem:
        history = require_history(self, history)
        user = self.user_embeddings[users]
        prefs = self.history_vectors(history)
        user_mask = self._user_mask(history.mask)
        return self._problem("hlr++", user, prefs, user_mask, items, history.mask)

    def coefficient_bounds(
        self, users: Tensor, history: History | None
    ) -> CoefficientBounds | None:
        """Two mixtures of addresses, each of mass 1 when β = 1: the item attention (the target
        slot is always valid) and the user attention (mass 0 for a user without a valid slot).
        Its logits ``(u ⊙ y) K`` are bounded with ``max(||e_i||, max_j ||x_j||)``."""
        if self.beta != 1.0:
            return None
        history = require_history(self, history)
        user = self.user_embeddings[users]
        prefs = self.history_vectors(history)
        user_mask = self._user_mask(history.mask)
        has_pool = user_mask.any(1).to(user.dtype)
        pool_keys = key_norms(prefs, self.lram.scaled_keys, user_mask)
        one_slot = torch.ones(len(users), 1, dtype=torch.bool, device=user.device)
        user_keys = key_norms(user.unsqueeze(1), self.lram.scaled_keys, one_slot)
        pref_norms = prefs.norm(dim=-1).masked_fill(~history.mask, 0.0)
        longest = pref_norms.amax(1) if pref_norms.numel() else user.new_zeros(len(users))
        n_slots = self.lram.n_slots

        def floor(items: Tensor) -> Tensor:
            norms = items.norm(dim=1, keepdim=True)
            item_part = softmax_floor(torch.maximum(norms, longest) * user_keys, n_slots)
            return item_part + has_pool * softmax_floor(norms * pool_keys, n_slots)

        return CoefficientBounds(mass=1.0 + has_pool, floor=floor)

    @torch.no_grad()
    def explain(self, user: int, items: Tensor, history: History) -> list[Explanation]:
        """Both attention modules for each item: ``"item_attention"`` over ``"target"`` and the
        history items, ``"user_attention"`` over the history items (and ``"padding"`` for the
        slot the parity quirk admits)."""
        users = torch.tensor([user], device=items.device)
        vector = self.user_embeddings[users]
        prefs = self.history_vectors(history)
        targets = self.item_embeddings[items].unsqueeze(0)
        user_mask = self._user_mask(history.mask)
        item_weights = self._item_attention(vector, prefs, history.mask, targets)[1][0]
        user_weights = user_attention(self.lram, vector, prefs, user_mask, targets, self.beta)[1]
        history_labels: list[Label] = [
            "padding" if item == self.n_items else item for item in history.items[0].tolist()
        ]
        item_mask = torch.cat([history.mask.new_ones(1, 1), history.mask], 1)[0]
        effects = effects_by_item(history, pool_effects(self, user, items, history))
        return [
            Explanation(
                int(item),
                {
                    "item_attention": _valid_ranked(["target", *history_labels], row, item_mask),
                    "user_attention": _valid_ranked(history_labels, user_row, user_mask[0]),
                },
                effect,
            )
            for item, row, user_row, effect in zip(
                items.tolist(), item_weights, user_weights[0], effects, strict=True
            )
        ]


def _valid_ranked(labels: list[Label], weights: Tensor, mask: Tensor) -> list[tuple[Label, float]]:
    keep = mask.tolist()
    return ranked([label for label, ok in zip(labels, keep, strict=True) if ok], weights[mask])


def broadcast_scores(model: HLR, users: Tensor, history: History) -> Tensor:
    """Reference scores of HLR or HLR++ computed like the official code (spec 3.0, 3.5, 3.6):
    every relation is materialised, (U, I, 1+P, d) for HLR, the tiled (U, I, P, d) history
    relations of HLR++'s item attention. The test oracle and benchmark baseline of ``score``."""
    with torch.no_grad():
        lram, beta = model.lram, model.beta
        user = model.user_embeddings[users]
        items = model.item_embeddings.unsqueeze(0)  # (1, I, d)
        prefs = model.history_vectors(history)  # (U, P, d)
        if isinstance(model, HLRPlusPlus):
            pool, mask = prefs, model._user_mask(history.mask)
        else:
            pool = torch.cat([user.unsqueeze(1), prefs], 1)
            mask = torch.cat([history.mask.new_ones(len(users), 1), history.mask], 1)
        relations = lram.relation(items.unsqueeze(2), pool.unsqueeze(1))  # (U, I, S, d)
        logits = lram.attention_logits((relations * user.view(len(users), 1, 1, -1)).sum(-1))
        weights = masked_attention(logits, mask.unsqueeze(1), beta)
        translation = (weights.unsqueeze(-1) * relations).sum(2)
        if isinstance(model, HLRPlusPlus):
            target = lram.relation(user.unsqueeze(1), items)  # (U, I, d)
            tiled = (
                lram.relation(user.unsqueeze(1), prefs)
                .unsqueeze(1)
                .expand(-1, items.shape[1], -1, -1)
            )
            item_pool = torch.cat([target.unsqueeze(2), tiled], 2)  # (U, I, 1+P, d)
            item_logits = lram.attention_logits((item_pool * items.unsqueeze(2)).sum(-1))
            item_mask = torch.cat([history.mask.new_ones(len(users), 1), history.mask], 1)
            item_weights = masked_attention(item_logits, item_mask.unsqueeze(1), beta)
            translation = translation + (item_weights.unsqueeze(-1) * item_pool).sum(2)
        return -(user.unsqueeze(1) + translation - items).pow(2).sum(-1)
