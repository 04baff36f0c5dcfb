"""Validate a prediction: how far must this image move before the model changes its mind? (core.evaluation.validate)"""

from __future__ import annotations

import json

import plotly.graph_objects as go
import streamlit as st

from core import IntriguingError
from core.checks import SEED_MAX
from core.config import DEFAULT_MODEL
from core.data.images import open_image
from core.data.photos import SAMPLE_PHOTOS, sample_photo
from core.evaluation import indicators
from core.evaluation.indicators import try_fix
from core.evaluation.validate import REFERENCE_ATTACK, REFERENCE_N, robustness_report
from core.lab import predict, source_id
from core.models import class_names, get_spec, usable_models
from core.models.inputs import model_input
from core.runtime import LIVE_THREADS
from core.visual.pictures import to_uint8, triple_picture
from dashboard import dataset_source, url_state
from dashboard.certify_view import show_bracket
from dashboard.common import cached_mnist, cached_model, model_names, show_error
from dashboard.smoothing_view import smoothed_prediction
from dashboard.url_state import bound

SOURCES = {"mnist": ("MNIST test set", "Upload"), "imagenet": ("Sample photo", "Upload")}

st.title("Validate a prediction")
st.caption(
    "Every attack searches the smallest change that flips the model's answer on this image. The verdict "
    "puts it next to the model's typical value on test images, Gaussian noise of the same size and the "
    "other models of the same domain."
)

names = usable_models(model_names())
try:
    url_state.accept_link(
        {
            "val_model": url_state.choice(names),
            **{f"val_source_{d}": url_state.choice(options) for d, options in SOURCES.items()},
            "val_idx": url_state.integer(0, len(cached_mnist("test").labels) - 1),
            "val_photo": url_state.choice(SAMPLE_PHOTOS),
            "val_seed": url_state.integer(0, SEED_MAX),
            "val_ref_n": url_state.integer(int(REFERENCE_N.low), int(REFERENCE_N.high)),
            **url_state.replay_check("val"),
            **dataset_source.link_checks("val"),
        }
    )
except IntriguingError as exc:  # MNIST missing: the checks cannot know its size
    show_error(exc)
left, right = st.columns([1, 1], gap="large")
with left:
    default = names.index(DEFAULT_MODEL) if DEFAULT_MODEL in names else 0
    model_name = st.selectbox("Model", names, index=default, **bound("val_model"))
    spec = get_spec(model_name)
    classes = class_names(model_name)
    options = dataset_source.sources(spec.dataset, SOURCES.get(spec.dataset, ()))
    source = st.radio("Image", options, horizontal=True, **bound(f"val_source_{spec.dataset}"))
    x, true_label, image_source = None, None, ""
    try:
        model = cached_model(model_name)
        if source == dataset_source.DATASET:  # a registered dataset's model: its own test images
            x, true_label, image_source = dataset_source.pick_image("val", model_name)
        elif source == "MNIST test set":
            mnist = cached_mnist("test")
            index = st.number_input(
                f"Index (0-{len(mnist.labels) - 1})", 0, len(mnist.labels) - 1, 0, **bound("val_idx")
            )
            x, true_label, image_source = (
                mnist.images[index : index + 1],
                int(mnist.labels[index]),
                f"MNIST test #{index}",
            )
        elif source == "Sample photo":
            photo = st.selectbox("Photo", SAMPLE_PHOTOS, **bound("val_photo"))
            x, image_source = model_input(sample_photo(photo), model_name), f"sample photo {photo}"
        else:
            upload = st.file_uploader("A PNG or JPEG image", type=["png", "jpg", "jpeg"], key="val_upload")
            if upload is not None:
                data = upload.getvalue()
                x = model_input(open_image(data, upload.name), model_name)
                image_source = f"upload {upload.name} sha256:{source_id(data)}"
    except IntriguingError as exc:
        show_error(exc)
        x = None
    if x is None:
        st.info("Choose an image to validate.")
        st.stop()

with right:
    probs = predict(model, x)
    label = int(probs.argmax())
    shown, says = st.columns(2)
    shown.image(to_uint8(x[0], max(1, 168 // x.shape[-1])), caption="what the model sees")
    if true_label is not None:
        says.metric("True label", classes[true_label])
    says.metric(
        "Prediction under test",
        classes[label],
        f"{probs[label]:.1%} confident",
        delta_color="off",
        delta_arrow="off",
    )
    smoothed_prediction(model, x[0], classes, label)
    seed = st.number_input("Seed", 0, SEED_MAX, 0, **bound("val_seed"))
    reference_n = REFERENCE_N.default
    if spec.dataset != "imagenet":  # a labelled test set (MNIST or a registered dataset): a reference
        reference_n = st.number_input(
            REFERENCE_N.label,
            int(REFERENCE_N.low),
            int(REFERENCE_N.high),
            REFERENCE_N.default,
            **bound("val_ref_n"),
        )
        st.caption(
            f"The model's reference ({REFERENCE_ATTACK} on the first test images) is computed once per model "
            "and size, and cached; the first report on a model takes about a minute longer."
        )

key = (model_name, image_source, int(seed), int(reference_n))
pressed = st.button("Validate this prediction", type="primary", icon=":material/verified:", key="val_go")
if pressed or url_state.replay_requested("val"):  # pressed, or opened from a link that names a report
    url_state.name_the_run("val")
    bar = st.progress(0.0, text="starting")
    try:
        report = robustness_report(
            model_name,
            x,
            true_label=true_label,
            image_source=image_source,
            load=cached_model,
            reference_n=int(reference_n),
            seed=int(seed),
            source="dashboard",
            threads=LIVE_THREADS,
            progress=lambda fraction, text: bar.progress(min(1.0, fraction), text=text),
        )
    except IntriguingError as exc:
        show_error(exc)
        st.stop()
    bar.empty()
    st.session_state.val_report = (key, report)

stored = st.session_state.get("val_report")
if stored is None or stored[0] != key:
    st.stop()
report = stored[1]

st.info(report.verdict, icon=":material/gavel:")

# Indicators of attack failure (core.evaluation.indicators): one warning each, and the first runnable fix in one click.
fired_checks = [c for c in report.indicators if c.fired]
for check in fired_checks:
    st.warning(
        f"**{check.title}** ({check.rate:.0%}): {check.meaning} Fix: {check.fix.text} "
        f"(command line: `{check.fix.cli}`)",
        icon=":material/report:",
    )
if (checked := indicators.passed(report.indicators)) is not None:
    with st.expander(f"Indicators of attack failure: {checked}", icon=":material/check_circle:"):
        st.markdown(
            "\n".join(f"- {c.title}: none of the image's attacks was flagged" for c in report.indicators)
        )
runnable = next((c for c in fired_checks if c.fix.attack), None)
if runnable is not None and st.button(f"Apply the fix: {runnable.fix.text}", key="val_fix"):
    try:
        tried = try_fix(model, report.x, report.label, runnable.fix, dataset=report.dataset, seed=report.seed)
    except IntriguingError as exc:
        show_error(exc)
    else:
        st.session_state.val_fix_run = (key, runnable.fix.cli, tried.summary())
fix_run = st.session_state.get("val_fix_run")
if fix_run is not None and fix_run[0] == key:
    _, flags, outcome = fix_run
    flipped = outcome["success_rate"] > 0
    (st.error if flipped else st.success)(
        f"With the fix ({flags}) the prediction "
        + (f"flips at RMS {outcome['mean_rms_distortion']:.4f}." if flipped else "still does not flip."),
        icon=":material/build:",
    )
easiest = report.finding(report.easiest) if report.easiest else None
cols = st.columns(4)
cols[0].metric(
    "Smallest flipping RMS", f"{easiest.rms:.4f}" if easiest else "none found", report.easiest,
    delta_color="off", delta_arrow="off",
)  # fmt: skip
fraction = report.fraction_needing_more()
cols[1].metric("Test images needing more", "–" if fraction is None else f"{fraction:.0%}")
cols[2].metric("Noise flips (same RMS)", "–" if easiest is None else f"{easiest.noise_flip_rate:.0%}")
lip = report.lipschitz
cols[3].metric(
    "Boundary estimate (RMS)", f"{lip.boundary_distance_rms:.4f}", "margin / max gradient", delta_color="off",
    delta_arrow="off",
)  # fmt: skip

show_bracket(model, report)

st.subheader("Smallest flipping perturbation per attack")
st.dataframe(
    [
        {
            "attack": f.attack,
            "method": f.method,
            "flipped": f.success,
            "RMS": f.rms,
            "L2": f.l2,
            "Linf": f.linf,
            "eps found": f.eps,
            "new class": classes[f.pred_after] if f.success else None,
            "noise flips": f.noise_flip_rate,
            "other models fooled": sum(r["fooled"] for r in f.transfer) if f.success else None,
            "time (s)": round(f.time_s, 2),
        }
        for f in report.findings
    ],
    hide_index=True,
)

flipped = [f for f in report.findings if f.success]
if flipped:
    st.subheader("Adversarial images")
    scale = 6 if report.dataset == "mnist" else 1
    for row in range(0, len(flipped), 3):
        for col, f in zip(st.columns(3), flipped[row : row + 3], strict=False):
            picture, amplification = triple_picture(report.x[0], f.x_adv[0], scale=scale)
            col.image(
                picture,
                caption=f"{f.attack}: original | perturbation x{amplification:.0f} | '{classes[f.pred_after]}'",
            )
    with st.expander("Fed to the other models of the domain"):
        st.dataframe(
            [{"attack": f.attack, **row} for f in flipped for row in f.transfer],
            hide_index=True,
        )

if report.reference is not None and report.reference.rms:
    st.subheader("This image against the model's typical robustness")
    fig = go.Figure(
        go.Histogram(x=report.reference.rms, nbinsx=30, name="test images", marker_color="#9aa5b1")
    )
    mine = report.finding(REFERENCE_ATTACK)
    if mine.success:
        fig.add_vline(x=mine.rms, line_color="#d62728", annotation_text="this image")
    fig.update_layout(
        height=280,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title=f"minimal RMS distortion ({REFERENCE_ATTACK})",
        yaxis_title="test images",
    )
    st.plotly_chart(fig, key="val_reference")

st.caption(
    f"Local Lipschitz estimate: margin {lip.margin:.3f}, gradient norm {lip.grad_norm_at_x:.3f} at the image and "
    f"up to {lip.max_grad_norm:.3f} within L2 {lip.ball_radius_l2:.3f} ({lip.samples} samples). "
    f"Report computed in {report.time_s:.1f} s."
)
downloads = st.columns(2)
downloads[0].download_button(
    "Download HTML report",
    report.to_html(),
    file_name=f"report-{model_name}.html",
    mime="text/html",
    key="val_html",
)
downloads[1].download_button(
    "Download JSON",
    json.dumps(report.to_dict(), indent=2, default=str),
    file_name=f"report-{model_name}.json",
    mime="application/json",
    key="val_json",
)
