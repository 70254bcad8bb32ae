"""Child process for the pdfminer.six fallback: PDF on stdin, "<pages>\\n" then page texts joined by
form feeds on stdout. Exit 3 = encrypted, 4 = unreadable. Run by pdf.pdfminer_in_child with a timeout."""

from __future__ import annotations

import io
import sys


def main() -> int:
    max_pages = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    data = sys.stdin.buffer.read()
    try:
        from pdfminer.converter import TextConverter
        from pdfminer.layout import LAParams
        from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
        from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
        from pdfminer.pdfpage import PDFPage
        from pdfminer.pdfparser import PDFParser
    except ImportError:
        return 4
    try:
        doc = PDFDocument(PDFParser(io.BytesIO(data)))
    except (PDFPasswordIncorrect, PDFEncryptionError):
        return 3
    except Exception:
        return 4
    rm = PDFResourceManager()
    texts: list[str] = []
    count = 0
    try:
        for page in PDFPage.create_pages(doc):
            count += 1
            if count > max_pages:
                continue
            buf = io.StringIO()
            device = TextConverter(rm, buf, laparams=LAParams())
            PDFPageInterpreter(rm, device).process_page(page)
            device.close()
            texts.append(buf.getvalue())
    except Exception:
        if not texts:
            return 4
    sys.stdout.buffer.write((f"{count}\n" + "\f".join(texts)).encode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
