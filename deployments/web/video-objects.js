// The video mode's list of tracked objects: colour, label (its COCO / YouTube-VIS category),
// on how many frames it has a mask, and a delete button.

/**
 * @param {HTMLElement} list the <ul>
 * @param {{objects: Map<number, {label: string, colour: string}>, masks: Array<Map>, selected: number|null}} video
 * @param {{select: (objId: number) => void, remove: (objId: number) => void}} actions
 */
export function renderTracked(list, video, { select, remove: onRemove }) {
  list.replaceChildren(
    ...[...video.objects].map(([objId, meta]) => {
      const item = document.createElement("li");
      item.dataset.testid = "video-object";
      item.dataset.objectId = String(objId);
      item.classList.toggle("selected", objId === video.selected);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = meta.colour;
      const label = document.createElement("input");
      label.type = "text";
      label.value = meta.label;
      label.setAttribute("aria-label", `Label of object ${objId}`);
      label.addEventListener("change", () => (meta.label = label.value));
      const frames = video.masks.filter((frame) => frame.has(objId)).length;
      const count = document.createElement("span");
      count.className = "score";
      count.textContent = `${frames} fr`;
      count.title = `on ${frames} of the video's frames`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Delete object ${objId}`);
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        onRemove(objId);
      });
      item.append(swatch, label, count, document.createElement("span"), remove);
      item.addEventListener("click", () => select(objId));
      return item;
    }),
  );
}
