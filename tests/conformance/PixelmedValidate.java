// Validate DICOM files with pixelmed's IOD validator (and its SR validator for structured
// reports) in one JVM: each validator compiles its XSLT rules once, which takes ~10 s.
//
//   java -cp /usr/share/java/pixelmed.jar PixelmedValidate.java FILE...
//
// Prints "=== FILE" then the validators' reports for each file.
import com.pixelmed.dicom.Attribute;
import com.pixelmed.dicom.AttributeList;
import com.pixelmed.dicom.TagFromName;
import com.pixelmed.validate.DicomInstanceValidator;
import com.pixelmed.validate.DicomSRValidator;

public class PixelmedValidate {
    public static void main(String[] args) throws Exception {
        DicomInstanceValidator instances = new DicomInstanceValidator();
        DicomSRValidator reports = null;
        for (String path : args) {
            AttributeList list = new AttributeList();
            list.read(path);
            System.out.println("=== " + path);
            System.out.println(instances.validate(list));
            String sopClass = Attribute.getSingleStringValueOrEmptyString(list, TagFromName.SOPClassUID);
            if (sopClass.startsWith("1.2.840.10008.5.1.4.1.1.88.")) {
                if (reports == null) {
                    reports = new DicomSRValidator();
                }
                System.out.println(reports.validate(list));
            }
        }
    }
}
