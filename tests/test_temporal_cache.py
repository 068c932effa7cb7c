"""Temporal feature cache on every tiny architecture: cached == uncached sampling, through the real
diffusers pipelines and through plain loops, float and quantized, with offload; one computation
per run; clear errors when the timesteps change; disable() restores the model exactly."""
import pytest
import torch
import qengine
from qengine.integrations import tiny_models as tm
from qengine.integrations.diffusers import find_denoiser
from qengine.integrations.temporal_cache import TemporalCacheError, _DiT, temporal_module_names

# Batched precompute runs each Linear of the timestep path with S*R rows instead of R: the GEMM
# may round the last bits differently (measured on CPU: 0 for three archs, <= 1e-5 relative for the rest).
BATCHED_RTOL = 3e-5
STEPS = 3  # pipeline runs (the plain loops of tiny_models take tm.NUM_STEPS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny models gain nothing from threads, and on a shared 2-core box OpenMP's spinning
    # threads make this file 4x slower (measured: 15 s vs 60 s).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(out, ref, rtol=BATCHED_RTOL):
    return (out.float() - ref.float()).abs().max().item() <= rtol * ref.float().abs().max().item()


def _inputs(arch, seed=5):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    b, text = tm.BATCH, (tm.BATCH, tm.TEXT_LEN, tm.TEXT_DIM)
    if arch == "unet2d_condition":
        return dict(prompt_embeds=r(*text), negative_prompt_embeds=r(*text), latents=r(b, 4, 16, 16),
                    guidance_scale=4.0)
    if arch == "flux":
        from diffusers import FluxPipeline
        return dict(prompt_embeds=r(*text), pooled_prompt_embeds=r(b, tm.POOLED_DIM), guidance_scale=3.5,
                    latents=FluxPipeline._pack_latents(r(b, 4, 16, 16), b, 4, 16, 16))
    return dict(prompt_embeds=r(*text), pooled_prompt_embeds=r(b, tm.POOLED_DIM), negative_prompt_embeds=r(*text),
                negative_pooled_prompt_embeds=r(b, tm.POOLED_DIM), latents=r(b, 4, 16, 16), guidance_scale=4.0)


def _run_pipe(pipe, inputs, steps=STEPS, **kw):
    args = {k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()}
    return pipe(**args, **kw, height=128, width=128, num_inference_steps=steps, output_type="latent",
                return_dict=False)[0]


def _route(arch, quantize=None):
    """(sample(), enable(**kw)) for the arch's route: its pipeline, or the plain loop of tiny_models."""
    if arch in tm.PIPELINE_ARCHS:
        pipe = tm.build_tiny_pipeline(arch)
        if quantize:
            qengine.quantize(pipe, quantize)
        inputs = _inputs(arch)
        return (lambda: _run_pipe(pipe, inputs)), (lambda **kw: qengine.enable_temporal_cache(pipe, **kw)), pipe
    model, sample = tm.build_tiny(arch)
    if quantize:
        qengine.quantize(model, quantize)
    sched = tm._scheduler(arch)  # configured like the loop's own (it makes a fresh one per run)
    sched.set_timesteps(tm.NUM_STEPS)
    return (lambda: sample(model)), (lambda **kw: qengine.enable_temporal_cache(model, sched, **kw)), model


def _temporal_linear(arch):
    return {"unet2d_condition": "down_blocks.1.resnets.0.time_emb_proj",
            "unet2d": "up_blocks.0.resnets.1.time_emb_proj",
            "dit": "transformer_blocks.1.norm1.linear", "flux": "single_transformer_blocks.0.norm.linear",
            "sd3": "transformer_blocks.0.norm1.linear"}[arch]


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_cached_equals_uncached(arch):
    sample, enable, _ = _route(arch)
    ref = sample()
    with enable(exact=True) as cache:  # per-step rows inside the pass: the very same GEMMs, bit-exact
        assert torch.equal(sample(), ref)
    steps = STEPS if arch in tm.PIPELINE_ARCHS else tm.NUM_STEPS
    assert cache.stats == {"precomputes": 1, "served": steps}  # CFG doubles the batch, not the calls
    with enable():  # one batched pass
        assert _close(sample(), ref)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_quantized_model_and_quantized_temporal_layer(arch):
    # w8a8-int8 everywhere, plus one temporal projection forced low-bit: its QLinear output is cached.
    layer = _temporal_linear(arch)
    cfg = qengine.QuantConfig.preset("w8a8-int8", overrides={layer: {"scheme": "w8a8-int8"}})
    sample, enable, obj = _route(arch, quantize=cfg)
    assert isinstance(find_denoiser(obj)[0].get_submodule(layer), qengine.QLinear)
    ref = sample()
    with enable(exact=True) as cache:
        assert layer in cache.names
        assert torch.equal(sample(), ref)
        exact = {k: v.clone() for k, v in cache.entries[0].tables.items()}
    with enable() as cache:
        out = sample()
        # The batched tables match the per-step ones to the last bits. (The sampled latents may differ
        # by more: a last-bit change can flip the rounding of a downstream int8 activation; see notes.)
        for k, v in cache.entries[0].tables.items():
            assert (v - exact[k]).abs().max() <= 1e-5 * exact[k].abs().max(), k
    assert torch.isfinite(out).all()


def _counting(model, names):
    counts = dict.fromkeys(names, 0)
    for n in names:
        m = model.get_submodule(n)
        def fwd(*a, _n=n, _f=m.forward, **k):
            counts[_n] += 1
            return _f(*a, **k)
        m.forward = fwd
    return counts


@pytest.mark.parametrize("arch", ["unet2d", "dit", "sd3"])
def test_each_module_is_computed_once_per_conditioning(arch):
    sample, enable, obj = _route(arch)
    model, _ = find_denoiser(obj)
    names = temporal_module_names(model)
    counts = _counting(model, names)
    with enable(verify=False) as cache:
        out = sample()
        assert set(counts.values()) == {1}  # one batched call each for the whole run
        assert torch.equal(sample(), out)
        assert set(counts.values()) == {1}  # same conditioning: served from the entry
    assert cache.stats["served"] == 2 * (STEPS if arch in tm.PIPELINE_ARCHS else tm.NUM_STEPS)
    counts.update(dict.fromkeys(names, 0))
    with enable(verify=True):  # the first served call also checks every module against its live output
        sample()
    assert min(counts.values()) == 2


def test_new_conditioning_within_a_run_gets_its_own_entry():
    # FLUX true CFG calls the transformer twice per step, with two pooled embeddings.
    pipe = tm.build_tiny_pipeline("flux")
    inputs = _inputs("flux")
    g = torch.Generator().manual_seed(9)
    inputs.update(negative_prompt_embeds=torch.randn(tm.BATCH, tm.TEXT_LEN, tm.TEXT_DIM, generator=g),
                  negative_pooled_prompt_embeds=torch.randn(tm.BATCH, tm.POOLED_DIM, generator=g), true_cfg_scale=2.0)
    ref = _run_pipe(pipe, inputs)
    with qengine.enable_temporal_cache(pipe) as cache:
        out = _run_pipe(pipe, inputs)
        assert cache.stats == {"precomputes": 2, "served": 2 * STEPS} and len(cache.entries) == 2
        inputs["pooled_prompt_embeds"] = inputs["pooled_prompt_embeds"] + 1  # a new prompt: one new entry
        _run_pipe(pipe, inputs)
        assert cache.stats["precomputes"] == 3 and len(cache.entries) == 2
    assert _close(out, ref)


def test_flux_bf16_timestep_convention():
    # FluxPipeline passes (t in the latents' dtype) / 1000; the cache reproduces it bit for bit.
    pipe = tm.build_tiny_pipeline("flux")
    pipe.transformer.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if torch.is_tensor(v) else v for k, v in _inputs("flux").items()}
    ref = _run_pipe(pipe, inputs)
    with qengine.enable_temporal_cache(pipe, exact=True):
        assert torch.equal(_run_pipe(pipe, inputs), ref)
    with qengine.enable_temporal_cache(pipe):
        assert _close(_run_pipe(pipe, inputs), ref, rtol=0.02)  # bf16: a few ulps


def test_sdxl_text_time_and_class_embedding_plain_loop():
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=8, cross_attention_dim=64, attention_head_dim=4, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8, time_cond_proj_dim=16,
        class_embed_type="timestep", time_embedding_act_fn="silu", transformer_layers_per_block=1).eval()
    sched = EulerDiscreteScheduler()
    g = torch.Generator().manual_seed(1)
    x0, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 8, 64, generator=g)
    cond = dict(added_cond_kwargs={"text_embeds": torch.randn(2, 32, generator=g),
                                   "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)},
                timestep_cond=torch.randn(2, 16, generator=g), class_labels=torch.tensor([3.0, 700.0]))

    @torch.no_grad()
    def sample():
        sched.set_timesteps(3)
        x = x0.clone()
        for t in sched.timesteps:
            eps = unet(sched.scale_model_input(x, t), t, text, **cond).sample
            x = sched.step(eps, t, x).prev_sample
        return x

    ref = sample()
    with qengine.enable_temporal_cache(unet, sched, exact=True) as cache:
        assert {"add_embedding", "class_embedding", "time_embedding"} <= set(cache.names)
        assert torch.equal(sample(), ref)
    with qengine.enable_temporal_cache(unet, sched):
        assert _close(sample(), ref)


@pytest.mark.parametrize("arch", ["flux", "sd3"])  # FLUX's first parameter is an offloaded one
def test_offload_moves_weights_and_disable_restores_them(arch):
    pipe = tm.build_tiny_pipeline(arch)
    model, _ = find_denoiser(pipe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = _inputs(arch)
    other = {k: v[:1] if torch.is_tensor(v) else v for k, v in _inputs(arch, seed=6).items()}  # batch 1
    ref, ref2 = _run_pipe(pipe, inputs), _run_pipe(pipe, other)
    cache = qengine.enable_temporal_cache(pipe, offload=True)
    out = _run_pipe(pipe, inputs)
    assert cache.offloaded.keys() == set(cache.names)
    for n in cache.names:  # empty placeholders on the model's device; the weights live on CPU
        assert all(t.numel() == 0 and t.device == model.device for t in model.get_submodule(n).parameters())
    assert all(slot[3].device.type == "cpu" for off in cache.offloaded.values() for slot in off.slots)
    assert model.device.type == "cpu" and model.dtype == torch.float32
    with pytest.raises(TemporalCacheError, match="offloaded"):
        model.get_submodule(cache.names[-1])(torch.zeros(1, 1))
    with pytest.raises(TemporalCacheError, match="before state_dict"):
        model.state_dict()
    out2 = _run_pipe(pipe, other)  # a new entry: the weights are streamed back one module at a time
    assert cache.stats["precomputes"] == 2
    cache.disable()
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert _close(out, ref) and _close(out2, ref2)
    assert torch.equal(_run_pipe(pipe, inputs), ref)


def test_timesteps_changed_under_the_cache_raise():
    pipe = tm.build_tiny_pipeline("sd3")
    inputs = _inputs("sd3")
    with qengine.enable_temporal_cache(pipe) as cache:
        _run_pipe(pipe, inputs)
        with pytest.raises(TemporalCacheError, match="timesteps changed under the temporal cache"):
            _run_pipe(pipe, inputs, steps=6)  # a new set_timesteps with other values
        cache.reset()  # or enable again
        out = _run_pipe(pipe, inputs, steps=6)
    assert _close(out, _run_pipe(pipe, inputs, steps=6))

    # A plain loop whose scheduler is not the one the cache holds: a timestep it does not know.
    model, sample = tm.build_tiny("unet2d")
    with qengine.enable_temporal_cache(model, timesteps=[999, 500, 1]):
        with pytest.raises(TemporalCacheError, match="is not among the 3 timesteps"):
            sample(model)
    with pytest.raises(TypeError, match="scheduler"):
        qengine.enable_temporal_cache(model)


def test_disable_restores_the_original_behaviour_exactly():
    model, sample = tm.build_tiny("dit")
    ref = sample(model)
    sched = tm._scheduler("dit")
    sched.set_timesteps(tm.NUM_STEPS)
    cache = qengine.enable_temporal_cache(model, sched)
    with pytest.raises(TemporalCacheError, match="already enabled"):
        qengine.enable_temporal_cache(model, sched)
    sample(model)
    cache.disable()
    cache.disable()  # idempotent
    assert not cache.enabled and model._qengine_temporal_cache is None
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(sample(model), ref)


def test_self_check_catches_a_wrong_recipe(monkeypatch):
    def wrong(self, model, ts, cond, like):  # forgets the silu before the final adaLN projection
        for i, block in enumerate(model.transformer_blocks):
            emb = block.norm1.emb(ts, cond["class_labels"], hidden_dtype=like.dtype)
            block.norm1.linear(block.norm1.silu(emb))
            if i == 0:
                model.proj_out_1(emb)
    monkeypatch.setattr(_DiT, "run", wrong)
    model, sample = tm.build_tiny("dit")
    with qengine.enable_temporal_cache(model, timesteps=_dit_timesteps()):
        with pytest.raises(TemporalCacheError, match="self-check failed for proj_out_1"):
            sample(model)


def _dit_timesteps():
    sched = tm._scheduler("dit")
    sched.set_timesteps(tm.NUM_STEPS)
    return sched.timesteps


def test_unsupported_model_is_refused():
    with pytest.raises(TemporalCacheError, match="does not support Linear"):
        qengine.enable_temporal_cache(torch.nn.Linear(2, 2), timesteps=[1])


def test_rows_at_different_steps_and_python_timesteps():
    model, _ = tm.build_tiny("dit")
    ts = _dit_timesteps()
    g = torch.Generator().manual_seed(3)
    x, labels = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([1, 2])
    mixed = torch.stack([ts[0], ts[2]])  # each row at its own step
    with torch.no_grad():
        ref = model(x, timestep=mixed, class_labels=labels).sample
        with qengine.enable_temporal_cache(model, timesteps=ts, exact=True):
            assert torch.equal(model(x, timestep=mixed, class_labels=labels).sample, ref)
    unet, sample = tm.build_tiny("unet2d")
    with torch.no_grad():
        ref = unet(torch.ones(2, 1, 16, 16), int(ts[1]), class_labels=labels).sample  # a python int timestep
        with qengine.enable_temporal_cache(unet, timesteps=ts, exact=True):
            assert torch.equal(unet(torch.ones(2, 1, 16, 16), int(ts[1]), class_labels=labels).sample, ref)
