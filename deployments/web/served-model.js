// What the service serves (GET sam3/model), named in the header, so that a demo model or
// random weights are never taken for SAM3; asked until the service answers (a key it needs
// may come later).

import { $, api } from "./context.js";

const SCORES = {
  centre_click_miou: "centre click IoU",
  box_miou: "box IoU",
  click_then_corrective_click_miou: "corrective click IoU",
  concept_f1: "concept F1",
  tracking_j: "tracking J",
};

let answer = null;

/** @returns {Promise<object|null>} the service's answer, or null while it gives none */
export async function servedModel() {
  answer ??= api.model().then((model) => {
    if (!model) answer = null;
    else show(model);
    return model;
  });
  return answer;
}

function show(model) {
  const badge = $("served-model");
  badge.textContent = {
    demo: "Demo model · not SAM3",
    random: "Random weights · noise",
  }[model.weights] ?? model.name;
  const scores = Object.entries(model.held_out)
    .filter(([key]) => key in SCORES)
    .map(([key, value]) => `${SCORES[key]} ${value.toFixed(2)}`);
  badge.title = [
    `${model.name}: ${model.description}`,
    scores.length ? `Held-out scores: ${scores.join(", ")}` : "",
    model.concepts === "untrained" ? "Its concept detector is untrained." : "",
  ]
    .filter(Boolean)
    .join("\n");
  badge.classList.toggle("warning", model.weights !== "checkpoint");
  badge.hidden = false;
}
