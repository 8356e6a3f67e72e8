// Decode a DICOM SEG onto its source instances the way OHIF's Cornerstone viewer does:
// dcmjs.adapters.Cornerstone.Segmentation.generateToolState, given the source images as
// cornerstone-style imageIds (in the order given) and a metadata provider read from
// their headers.
//
//   node read_seg.js SEG.dcm SOURCE.dcm [SOURCE.dcm ...]
//
// Prints JSON: {segments: [{number, label, type}], rows, columns, imageIds, labelmap:
// base64 of a little-endian uint16 array (imageIds x rows x columns, segment numbers)},
// or exits 2 with the error.
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

function read(path) {
  const buf = fs.readFileSync(path);
  const data = dcmjs.data.DicomMessage.readFile(
    buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)
  );
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(data.dict);
}

function first(value) {
  return Array.isArray(value) ? value[0] : value;
}

function orientation(ds) {
  let iop = ds.ImageOrientationPatient;
  if (!iop && ds.SharedFunctionalGroupsSequence) {
    const shared = first(ds.SharedFunctionalGroupsSequence);
    iop = shared.PlaneOrientationSequence && first(shared.PlaneOrientationSequence).ImageOrientationPatient;
  }
  if (!iop && ds.PerFrameFunctionalGroupsSequence) {
    const frame = first(ds.PerFrameFunctionalGroupsSequence);
    iop = first(frame.PlaneOrientationSequence).ImageOrientationPatient;
  }
  return iop.map(Number);
}

function main() {
  const [segPath, ...sources] = process.argv.slice(2);
  const imageIds = [];
  const meta = {};
  for (const path of sources) {
    const ds = read(path);
    const iop = orientation(ds);
    const frames = Number(ds.NumberOfFrames || 1);
    const ids = frames > 1 || ds.PerFrameFunctionalGroupsSequence
      ? Array.from({ length: frames }, (_, f) => `${path}?frame=${f}`)
      : [path];
    for (const id of ids) {
      imageIds.push(id);
      meta[id] = {
        imagePlaneModule: {
          rowCosines: iop.slice(0, 3), columnCosines: iop.slice(3, 6),
          rows: Number(ds.Rows), columns: Number(ds.Columns),
        },
        imagePixelModule: { rows: Number(ds.Rows), columns: Number(ds.Columns) },
        generalSeriesModule: { seriesInstanceUID: ds.SeriesInstanceUID },
        sopCommonModule: { sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID },
        frameNumber: frames > 1 || ds.PerFrameFunctionalGroupsSequence
          ? Number(id.split("frame=")[1]) + 1 : undefined,
        instance: ds,
      };
    }
  }
  const provider = { get: (type, id) => (meta[id] || {})[type] };
  const segBuf = fs.readFileSync(segPath);
  const arrayBuffer = segBuf.buffer.slice(segBuf.byteOffset, segBuf.byteOffset + segBuf.byteLength);
  const state = dcmjs.adapters.Cornerstone.Segmentation.generateToolState(
    imageIds, arrayBuffer, provider
  );
  if (!state || !state.labelmapBufferArray) {
    throw new Error("dcmjs could not place the SEG on the source images");
  }
  if (state.labelmapBufferArray.length !== 1) throw new Error("segments overlap");
  const seg = read(segPath);
  const segments = [].concat(seg.SegmentSequence).map((s) => ({
    number: Number(s.SegmentNumber),
    label: s.SegmentLabel,
    type: first(s.SegmentedPropertyTypeCodeSequence).CodeValue,
  }));
  const labelmap = Buffer.from(state.labelmapBufferArray[0]).toString("base64");
  process.stdout.write(
    JSON.stringify({ segments, rows: seg.Rows, columns: seg.Columns, imageIds, labelmap })
  );
}

try {
  main();
} catch (error) {
  process.stderr.write(`read_seg: ${error.stack || error}\n`);
  process.exit(2);
}
