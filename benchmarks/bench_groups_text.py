"""find_groups on Hugging Face text models outside ``bench_groups.HF_BATTERY`` (a held-out check
for the text patterns of issue 13: mixture-of-experts variants, ALiBi, relative attention, ...).

Same measurement as ``bench_groups.py --hf`` (tiny configs, random weights, no download; the
independent permutation check of every group), on other model classes:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_groups_text.py [--only NAME ...]
"""

from __future__ import annotations

import argparse

import bench_groups as B
import torch

T, S = B._TEXT, B._SEQ2SEQ
_MOE = dict(num_key_value_heads=2, num_experts_per_tok=2)

#: name: (model class in transformers, config overrides, inputs)
HF_TEXT_EXTRA: dict[str, tuple[str, dict, str]] = {
    "qwen2-moe": ("Qwen2MoeForCausalLM", dict(_MOE, num_experts=3, moe_intermediate_size=16, shared_expert_intermediate_size=24), T),
    "qwen3-moe": ("Qwen3MoeForCausalLM", dict(_MOE, num_experts=3, moe_intermediate_size=16, head_dim=8), T),
    "olmoe": ("OlmoeForCausalLM", dict(_MOE, num_experts=3), T),
    "granitemoe": ("GraniteMoeForCausalLM", dict(_MOE, num_local_experts=3), T),
    "granitemoeshared": ("GraniteMoeSharedForCausalLM", dict(_MOE, num_local_experts=3, shared_intermediate_size=16), T),
    "phimoe": ("PhimoeForCausalLM", dict(_MOE, num_local_experts=3), T),
    "gpt-oss": ("GptOssForCausalLM", dict(_MOE, num_local_experts=3, head_dim=8, layer_types=["full_attention", "sliding_attention"]), T),
    "llama4": ("Llama4ForCausalLM", dict(num_key_value_heads=2, head_dim=8, num_local_experts=3, num_experts_per_tok=1, intermediate_size_mlp=48, moe_layers=[1], no_rope_layers=[1, 1], attention_chunk_size=8, interleave_moe_layer_step=1), T),
    "ernie4.5-moe": ("Ernie4_5_MoeForCausalLM", dict(num_key_value_heads=2, moe_num_experts=3, moe_k=2, moe_intermediate_size=16, moe_layer_start_index=1), T),
    "hunyuan-moe": ("HunYuanMoEV1ForCausalLM", dict(_MOE, num_experts=3, moe_topk=2, head_dim=8), T),
    "minimax": ("MiniMaxForCausalLM", dict(_MOE, num_local_experts=3, head_dim=8, layer_types=["full_attention", "full_attention"], block_size=4), T),
    "dots1": ("Dots1ForCausalLM", dict(_MOE, n_routed_experts=3, moe_intermediate_size=16, first_k_dense_replace=1, n_shared_experts=1, head_dim=8), T),
    "deepseek-v3": ("DeepseekV3ForCausalLM", dict(num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, first_k_dense_replace=1, n_group=1, topk_group=1), T),
    "deepseek-v2": ("DeepseekV2ForCausalLM", dict(num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, first_k_dense_replace=1, n_group=1, topk_group=1), T),
    "switch": ("SwitchTransformersForConditionalGeneration", dict(num_experts=2, expert_capacity=8, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1), S),
    "nllb-moe": ("NllbMoeForConditionalGeneration", dict(num_experts=2, encoder_sparse_step=1, decoder_sparse_step=1, expert_capacity=8), S),
    "falcon-alibi": ("FalconForCausalLM", dict(alibi=True), T),
    "deberta-rel": ("DebertaForSequenceClassification", dict(relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16), T),
    "deberta-v2-rel": ("DebertaV2ForSequenceClassification", dict(relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16), T),
    "olmo2": ("Olmo2ForCausalLM", dict(num_key_value_heads=2), T),
    "gemma3": ("Gemma3ForCausalLM", dict(head_dim=8, num_key_value_heads=2, sliding_window=4), T),
    "cohere": ("CohereForCausalLM", dict(num_key_value_heads=2), T),
    "persimmon": ("PersimmonForCausalLM", {}, T),
    "gpt-bigcode": ("GPTBigCodeForCausalLM", {}, T),
    "ctrl": ("CTRLLMHeadModel", dict(dff=48), T),
    "xlm": ("XLMForSequenceClassification", dict(emb_dim=32, n_layers=2, n_heads=4), T),
    "megatron-bert": ("MegatronBertForSequenceClassification", {}, T),
    "rembert": ("RemBertForSequenceClassification", dict(input_embedding_size=16, output_embedding_size=16), T),
    "roc-bert": ("RoCBertForSequenceClassification", dict(pronunciation_vocab_size=16, shape_vocab_size=16, pronunciation_embed_dim=8, shape_embed_dim=8), T),
    "fnet": ("FNetForSequenceClassification", {}, T),
    "longformer": ("LongformerForSequenceClassification", dict(attention_window=4), T),
    "mvp": ("MvpForConditionalGeneration", {}, S),
    "pegasus-x": ("PegasusXForConditionalGeneration", dict(block_size=4, num_global_tokens=2, stagger_local_blocks=False), S),
    "umt5": ("UMT5ForConditionalGeneration", {}, S),
    "longt5": ("LongT5ForConditionalGeneration", {}, S),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="entries to run (default: all)")
    ap.add_argument("--verbose", action="store_true", help="print whole warnings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    B.HF_BATTERY.clear()
    B.HF_BATTERY.update(HF_TEXT_EXTRA)
    B.hf_battery(args.only, args.verbose)


if __name__ == "__main__":
    main()
