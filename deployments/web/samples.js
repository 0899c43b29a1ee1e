// Sample scenes of shapes to try the demo model on (SAM3_CHECKPOINT=demo:shapes, a demo model
// trained on synthetic shapes, not SAM3). Opening one hands it to the page's file input, so
// it goes through exactly the path a chosen file does.

const select = document.getElementById("sample-scenes");

select.addEventListener("change", async () => {
  const name = select.value;
  select.value = "";
  if (!name) return;
  const response = await fetch(`page/samples/${name}`);
  if (!response.ok) throw new Error(`sample ${name}: HTTP ${response.status}`);
  const file = new File([await response.blob()], name, { type: "image/png" });
  const input = document.getElementById("image-input");
  const files = new DataTransfer();
  files.items.add(file);
  input.files = files.files;
  input.dispatchEvent(new Event("change"));
});
