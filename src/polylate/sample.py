"""A small multilingual sample (written for polylate) for the demo and smoke tests."""

SAMPLE_DOCUMENTS = [
    {"id": "en-paris", "lang": "en", "text": "Paris is the capital and largest city of France, on the river Seine."},
    {"id": "de-berlin", "lang": "de", "text": "Berlin ist die Hauptstadt Deutschlands und liegt an der Spree."},
    {"id": "es-madrid", "lang": "es", "text": "Madrid es la capital de España y su ciudad más poblada."},
    {"id": "fr-photosynthese", "lang": "fr", "text": "La photosynthèse permet aux plantes de transformer la lumière du soleil en énergie chimique."},
    {"id": "en-photosynthesis", "lang": "en", "text": "Photosynthesis lets plants convert sunlight, water and carbon dioxide into sugar and oxygen."},
    {"id": "ja-fuji", "lang": "ja", "text": "富士山は日本で最も高い山で、標高は3776メートルです。"},
    {"id": "zh-greatwall", "lang": "zh", "text": "长城是中国古代修建的军事防御工程，全长两万多公里。"},
    {"id": "ru-volga", "lang": "ru", "text": "Волга — самая длинная река в Европе, она впадает в Каспийское море."},
    {"id": "ar-nile", "lang": "ar", "text": "نهر النيل هو أطول نهر في أفريقيا ويمر عبر مصر والسودان."},
    {"id": "hi-tea", "lang": "hi", "text": "असम भारत में चाय के सबसे बड़े उत्पादक राज्यों में से एक है।"},
    {"id": "en-colbert", "lang": "en", "text": "ColBERT scores a query against a document by summing, for each query token, its best match among the document tokens."},
    {"id": "de-fussball", "lang": "de", "text": "Die Fußball-Weltmeisterschaft findet alle vier Jahre statt."},
    {"id": "pt-coffee", "lang": "pt", "text": "O Brasil é o maior produtor de café do mundo."},
    {"id": "ko-kimchi", "lang": "ko", "text": "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다."},
    {"id": "tr-istanbul", "lang": "tr", "text": "İstanbul, Avrupa ile Asya arasında yer alan Türkiye'nin en kalabalık şehridir."},
    {"id": "en-python", "lang": "en", "text": "Python is a programming language known for its readable syntax and large standard library."},
]

SAMPLE_QUERIES = [
    {"lang": "en", "text": "What is the capital of Germany?"},
    {"lang": "fr", "text": "Quelle est la capitale de la France ?"},
    {"lang": "es", "text": "¿Cómo obtienen energía las plantas?"},
    {"lang": "de", "text": "Welcher Fluss ist der längste in Europa?"},
    {"lang": "ja", "text": "日本で一番高い山は何ですか？"},
    {"lang": "en", "text": "Which country produces the most coffee?"},
    {"lang": "zh", "text": "中国的长城有多长？"},
    {"lang": "en", "text": "how does late interaction retrieval score documents"},
]
