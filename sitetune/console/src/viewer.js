// The result viewer: the analysed image with the mask (or the thickness map) overlaid,
// drawn by niivue (WebGL2) from the result's NIfTI files, fetched with the token.
import { Niivue, SLICE_TYPE } from "@niivue/niivue";
import { authHeaders } from "./api.js";

// Label colours: 1 red (blood pool / lesion), 2 green (myocardium), 3 blue, 4 yellow.
const LABELS = {
  R: [0, 230, 0, 40, 240], G: [0, 40, 200, 90, 200], B: [0, 40, 60, 230, 30],
  A: [0, 255, 255, 255, 255], I: [0, 1, 2, 3, 4],
};

export class ResultViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.nv = new Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, isColorbar: false,
      logLevel: "error", dragAndDropEnabled: false });
    this.overlay = "mask";
  }

  /** Load the image and one overlay of result `summary` (`overlay`: "mask" | "thickness"). */
  async open(summary, overlay = "mask") {
    if (!this.attached) {
      await this.nv.attachToCanvas(this.canvas);
      this.attached = true;
    }
    const base = `/v1/results/${summary.result_id}`;
    const headers = authHeaders();
    const volumes = [{ url: `${base}/image`, name: "image.nii.gz", colormap: "gray", headers }];
    if (overlay === "thickness") {
      const max = summary.ed?.thickness_mm?.max ?? 20;
      volumes.push({ url: `${base}/thickness`, name: "thickness.nii.gz", colormap: "warm",
        cal_min: 0.5, cal_max: Math.max(1, Math.ceil(max)), opacity: 0.85, headers });
    } else {
      volumes.push({ url: `${base}/mask`, name: "mask.nii.gz", opacity: 0.6, headers });
    }
    await this.nv.loadVolumes(volumes);
    if (overlay !== "thickness") this.nv.volumes[1].setColormapLabel(LABELS);
    this.nv.setSliceType(SLICE_TYPE.MULTIPLANAR);
    this.overlay = overlay;
    this.nv.updateGLVolume();
    return this.frames();
  }

  frames() {
    return this.nv.volumes.length ? this.nv.volumes[0].nFrame4D || 1 : 1;
  }

  /** Show phase `frame` of a 4D result in every loaded volume. */
  setFrame(frame) {
    for (const volume of this.nv.volumes) {
      if ((volume.nFrame4D || 1) > frame) this.nv.setFrame4D(volume.id, frame);
    }
  }
}
